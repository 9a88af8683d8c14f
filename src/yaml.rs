//! A YAML tree that remembers where each node came from, and the checks
//! every YAML file upkeep reads goes through first.
//!
//! Pipeline files are checked in full before anything runs, and every
//! problem is reported with its line and column, all of them at once. serde
//! stops at the first error and forgets positions once a value is read, so
//! pipelines are read through the event stream of `saphyr-parser` into this
//! small tree, and checked by hand (`pipeline/load.rs`).
//!
//! `upkeep.yaml` is read with serde, but only after the same first pass
//! ([`outline`]): the text must be UTF-8 (a leading byte-order mark, as
//! Windows editors write, is dropped), hold one document, give no key twice,
//! and nest at most [`MAX_DEPTH`] levels. The depth limit is what keeps a hostile file from
//! overflowing the stack in any recursive walk (serde's, `Drop`'s, ours),
//! and each refusal says where the file goes wrong.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// How deep collections may nest. upkeep's own files need a handful of
/// levels; a tree this deep is still cheap to walk recursively.
pub const MAX_DEPTH: usize = 64;

const BOM: char = '\u{FEFF}';
const BOM_BYTES: &[u8] = "\u{FEFF}".as_bytes();

/// A line and column, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    /// The start of the file.
    pub const START: Pos = Pos { line: 1, col: 1 };
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub enum Value {
    /// A scalar's text; `quoted` when it was written in quotes (so `"true"`
    /// is text, `true` a boolean).
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The scalar's text, for scalars.
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// What kind of node this is, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar {
                text,
                quoted: false,
            } if is_null(text) => "nothing (null)",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, quoted: false } if is_null(text))
    }
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// Why a file cannot be read as YAML (bad syntax, too deep, not UTF-8...),
/// with where it is. The message says it all: callers add only the place.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// The text of a YAML file's bytes: UTF-8, without a leading byte-order
/// mark (positions then count from the first character an editor shows).
pub fn decode(bytes: &[u8]) -> Result<&str, SyntaxError> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(SyntaxError {
            pos: Pos::START,
            message:
                "the file is UTF-16 (it starts with a UTF-16 byte-order mark): save it as UTF-8"
                    .into(),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|error| {
        let valid = &bytes[..error.valid_up_to()];
        let line_start = valid
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |newline| newline + 1);
        // Everything before the error is valid UTF-8: count its characters
        // (a byte-order mark is not one an editor shows).
        let line = &valid[line_start..];
        let col = String::from_utf8_lossy(line.strip_prefix(BOM_BYTES).unwrap_or(line))
            .chars()
            .count()
            + 1;
        SyntaxError {
            pos: Pos {
                line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
                col,
            },
            message: format!(
                "not UTF-8 text (byte 0x{:02X}): save the file as UTF-8",
                bytes[error.valid_up_to()]
            ),
        }
    })?;
    Ok(text.strip_prefix(BOM).unwrap_or(text))
}

/// What a first pass over a file read by serde found out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outline {
    /// No document at all (an empty file, or only comments).
    pub empty: bool,
    /// Where the first alias (`*name`) is: the place to point at when
    /// serde refuses what the aliases expand to.
    pub first_alias: Option<Pos>,
}

/// A scalar met by [`outline`], with where it is and the keys that lead to
/// it (`["backups", "dir"]`; a list item's "key" is its index).
#[derive(Debug)]
pub struct Scalar<'a> {
    pub keys: &'a [String],
    pub text: &'a str,
    /// Written without quotes: `~`, `null` and nothing are then null.
    pub plain: bool,
    /// A mapping's key (`keys` then leads to the mapping).
    pub is_key: bool,
    pub pos: Pos,
}

impl Scalar<'_> {
    pub fn is_null(&self) -> bool {
        self.plain && is_null(self.text)
    }

    /// `backups.dir`: the keys as the user writes them.
    pub fn dotted(&self) -> String {
        self.keys.join(".")
    }
}

/// Checks `text` (from [`decode`]) for what serde would choke on or report
/// without a position: syntax, more than one document, nesting deeper
/// than [`MAX_DEPTH`], no document at all. `check` sees every scalar where
/// it is, and may refuse it: serde places an error in a value at the start
/// of the mapping holding it, not at the value.
pub fn outline(
    text: &str,
    check: &mut dyn FnMut(&Scalar) -> Result<(), String>,
) -> Result<Outline, SyntaxError> {
    let mut outline = Outline {
        empty: true,
        first_alias: None,
    };
    let mut levels: Vec<Level> = Vec::new();
    // The keys (or indexes) that lead to the innermost open collection.
    let mut keys: Vec<String> = Vec::new();
    for next in Events::new(text) {
        let (event, pos) = next?;
        match event {
            Event::Alias(_) | Event::Scalar(..) => {
                outline.empty = false;
                let is_key = levels.last().is_some_and(Level::wants_key);
                let name = match &event {
                    Event::Scalar(text, style, _, _) => {
                        let mut path = keys.clone();
                        if !is_key {
                            path.extend(levels.last().map(Level::segment));
                        }
                        let scalar = Scalar {
                            keys: &path,
                            text,
                            plain: *style == ScalarStyle::Plain,
                            is_key,
                            pos,
                        };
                        check(&scalar).map_err(|message| SyntaxError { pos, message })?;
                        text.to_string()
                    }
                    _ => {
                        outline.first_alias.get_or_insert(pos);
                        "*".to_string()
                    }
                };
                if let (true, Some(level)) = (is_key, levels.last_mut()) {
                    level.key_seen(&name, pos, &keys)?;
                }
                Level::node_done(&mut levels, name);
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                outline.empty = false;
                // The new collection's entries live under the key (or index)
                // this collection is the value of.
                keys.extend(levels.last().map(Level::segment));
                levels.push(match event {
                    Event::SequenceStart(..) => Level::Seq(0),
                    _ => Level::Map {
                        key: None,
                        seen: HashMap::new(),
                    },
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                levels.pop();
                if !levels.is_empty() {
                    keys.pop();
                }
                // A collection used as a key has no name to give.
                Level::node_done(&mut levels, "?".to_string());
            }
            _ => {}
        }
    }
    Ok(outline)
}

/// An open collection in [`outline`].
enum Level {
    /// `key`: the key of the value being read, `None` while a key is.
    /// `seen`: the keys so far, and where.
    Map {
        key: Option<String>,
        seen: HashMap<String, Pos>,
    },
    /// The index of the item being read.
    Seq(usize),
}

impl Level {
    fn wants_key(&self) -> bool {
        matches!(self, Level::Map { key: None, .. })
    }

    /// What the node being read in this collection is called in a dotted
    /// path: its key, or its index (`?` for a key that is a collection).
    fn segment(&self) -> String {
        match self {
            Level::Map { key: Some(key), .. } => key.clone(),
            Level::Map { key: None, .. } => "?".to_string(),
            Level::Seq(index) => index.to_string(),
        }
    }

    /// Refuses a key the mapping has already: YAML forbids it, and a
    /// reader would quietly keep one of the two values.
    fn key_seen(&mut self, name: &str, pos: Pos, keys: &[String]) -> Result<(), SyntaxError> {
        let Level::Map { seen, .. } = self else {
            return Ok(());
        };
        if let Some(first) = seen.insert(name.to_string(), pos) {
            let within = match keys.is_empty() {
                true => String::new(),
                false => format!(" in `{}`", keys.join(".")),
            };
            return Err(SyntaxError {
                pos,
                message: format!(
                    "`{name}` is given twice{within} (first at line {}): keep one",
                    first.line
                ),
            });
        }
        Ok(())
    }

    /// A node of the innermost collection is complete: a mapping's key
    /// (`name` names it) or value, or a list item.
    fn node_done(levels: &mut [Level], name: String) {
        match levels.last_mut() {
            Some(Level::Map {
                key: key @ None, ..
            }) => *key = Some(name),
            Some(Level::Map { key, .. }) => *key = None,
            Some(Level::Seq(index)) => *index += 1,
            None => {}
        }
    }
}

/// Parses the first document of `text` (from [`decode`]); `None` for an
/// empty file.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    for next in Events::new(text) {
        let (event, pos) = next?;
        let node = match event {
            Event::Scalar(text, style, _, _) => Node {
                pos,
                value: Value::Scalar {
                    text: text.into_owned(),
                    quoted: style != ScalarStyle::Plain,
                },
            },
            Event::SequenceStart(_, _) => {
                stack.push(Frame::Seq(pos, Vec::new()));
                continue;
            }
            Event::MappingStart(_, _) => {
                stack.push(Frame::Map(pos, Vec::new(), None));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(pos, items)) => Node {
                    pos,
                    value: Value::Seq(items),
                },
                Some(Frame::Map(pos, entries, _)) => Node {
                    pos,
                    value: Value::Map(entries),
                },
                None => continue,
            },
            Event::Alias(_) => {
                return Err(SyntaxError {
                    pos,
                    message: "YAML aliases (`*name`) are not supported in pipeline files: write the value out".into(),
                });
            }
            _ => continue,
        };
        match stack.last_mut() {
            None => {
                root = Some(node);
            }
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, key)) => match key.take() {
                None => *key = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
    }
    Ok(root)
}

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Node, Node)>, Option<Node>),
}

/// The parser's events with their positions, refused past the first
/// document or deeper than [`MAX_DEPTH`]. Ends at the first error.
struct Events<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    depth: usize,
    documents: usize,
    failed: bool,
}

impl<'a> Events<'a> {
    fn new(text: &'a str) -> Events<'a> {
        Events {
            parser: Parser::new_from_str(text),
            depth: 0,
            documents: 0,
            failed: false,
        }
    }

    fn check(&mut self, event: &Event, pos: Pos) -> Result<(), SyntaxError> {
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(too_deep(pos));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => self.depth = self.depth.saturating_sub(1),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(SyntaxError {
                        pos,
                        message: "a second YAML document (`---`): the file holds one; remove the `---` line or what follows it".into(),
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn too_deep(pos: Pos) -> SyntaxError {
    SyntaxError {
        pos,
        message: format!(
            "nested more than {MAX_DEPTH} levels deep: upkeep's files need a few levels; look for runaway `- - -`, `[[[` or indentation here"
        ),
    }
}

impl<'a> Iterator for Events<'a> {
    type Item = Result<(Event<'a>, Pos), SyntaxError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.parser.next_event()?.map_err(|error| {
            let pos = Pos {
                line: error.marker().line(),
                col: error.marker().col() + 1,
            };
            match error.info() {
                // The parser's own limit, on `[[[[...`: the same problem.
                "recursion limit exceeded" => too_deep(pos),
                info => SyntaxError {
                    pos,
                    message: format!("YAML syntax error: {info}"),
                },
            }
        });
        let checked = next.and_then(|(event, span)| {
            let pos = Pos {
                line: span.start.line(),
                col: span.start.col() + 1,
            };
            self.check(&event, pos).map(|()| (event, pos))
        });
        self.failed = checked.is_err();
        Some(checked)
    }
}
