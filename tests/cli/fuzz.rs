//! Seeded fuzzing of the parsers of what users and disks hand upkeep:
//! upkeep.yaml, pipeline files, DuckDB headers and backup manifests.
//!
//! Each case starts from a valid input and mutates it (bytes flipped,
//! inserted or deleted, lines duplicated or moved, deep nesting, huge
//! numbers, odd unicode, byte-order marks, tabs, anchors, aliases, merge
//! keys, nulls), then calls the library's parser in this process. No input
//! may panic or overflow the stack (test threads have small stacks), and a
//! YAML file that is refused is bad input with `file:line:column:`.
//!
//! The suite runs a short, fixed-seed round. `scripts/fuzz.sh` runs long
//! ones: `UPKEEP_FUZZ_ITERATIONS` cases per parser from `UPKEEP_FUZZ_SEED`;
//! `UPKEEP_FUZZ_CASE` replays one case. Each case's input is also written to
//! `fuzz-NAME.last` in the test target's temp dir before it runs, so that a
//! case that kills the process (no panic message) can be looked at.

use std::os::unix::fs::FileExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use upkeep::config::Config;
use upkeep::db::{backups, header};
use upkeep::error::{code, exit_code};
use upkeep::pipeline::load;

const DEFAULT_SEED: u64 = 0x5EED_0FF0_CC0F_FEE5;
const DEFAULT_ITERATIONS: u64 = 5_000;

/// xorshift64*: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Never zero, and nearby seeds far apart.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

struct Settings {
    seed: u64,
    iterations: u64,
    only: Option<u64>,
}

fn settings() -> Settings {
    let number = |name: &str| {
        std::env::var(name).ok().map(|text| {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number"))
        })
    };
    Settings {
        seed: number("UPKEEP_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
        iterations: number("UPKEEP_FUZZ_ITERATIONS").unwrap_or(DEFAULT_ITERATIONS),
        only: number("UPKEEP_FUZZ_CASE"),
    }
}

/// Makes a case from a corpus entry (the corpus is there to splice from).
type Mutate = fn(&mut Rng, &[u8], &[Vec<u8>]) -> Vec<u8>;

/// What a check says of an input: accepted (`true`) or refused as it
/// should be (`false`); `Err` when a property does not hold.
type Check<'a> = &'a dyn Fn(&[u8]) -> Result<bool, String>;

/// Runs `check` on `iterations` mutated inputs; a panic or a property that
/// does not hold fails the test with the seed, the case and the input.
fn fuzz(name: &str, corpus: &[Vec<u8>], mutate: Mutate, check: Check) {
    let settings = settings();
    let last = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-{name}.last"));
    // Open for the whole run: rewriting a file that is closed each time
    // makes the file system flush it, case after case.
    let last_file = std::fs::File::create(&last)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", last.display()));
    let cases: Box<dyn Iterator<Item = u64>> = match settings.only {
        Some(case) => Box::new(std::iter::once(case)),
        None => Box::new(0..settings.iterations),
    };
    let mut accepted = 0u64;
    let mut count = 0u64;
    for case in cases {
        let mut rng = Rng::new(settings.seed ^ case.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let start = rng.pick(corpus).clone();
        let input = mutate(&mut rng, &start, corpus);
        let _ = last_file
            .set_len(0)
            .and_then(|()| last_file.write_all_at(&input, 0));
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| check(&input)));
        let why = match outcome {
            Ok(Ok(ok)) => {
                accepted += u64::from(ok);
                None
            }
            Ok(Err(why)) => Some(why),
            Err(panic) => Some(format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            )),
        };
        if let Some(why) = why {
            let shown: String = format!("{:?}", String::from_utf8_lossy(&input))
                .chars()
                .take(3_000)
                .collect();
            panic!(
                "fuzz {name}: {why}\nseed {seed:#x}, case {case}: replay with \
                 UPKEEP_FUZZ_SEED={seed:#x} UPKEEP_FUZZ_CASE={case}\n\
                 input ({len} bytes, all of it in {last}): {shown}",
                seed = settings.seed,
                len = input.len(),
                last = last.display()
            );
        }
        count += 1;
    }
    println!(
        "fuzz {name}: {count} cases from seed {:#x}, {accepted} accepted, the others refused",
        settings.seed
    );
}

// ---------------------------------------------------------------- mutations

/// Pieces that YAML parsers and upkeep's checks trip on.
const TOKENS: &[&str] = &[
    "\u{FEFF}",
    "\t",
    " ",
    "\n",
    "\r\n",
    "\r",
    ": ",
    ":",
    "- ",
    "-",
    "? ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "&b [x, y]",
    "<<: *a",
    "<<: {dir: x}",
    "<<: [*a, *a]",
    "!!str ",
    "!!int ",
    "!!binary ",
    "!!null ",
    "!x ",
    "!<tag:yaml.org,2002:map> ",
    "~",
    "null",
    "''",
    "\"\"",
    "\"\\u0000\"",
    "'",
    "\"",
    "|",
    ">-",
    "|+\n  x\n",
    "#",
    " # c",
    "---\n",
    "...\n",
    "--- ",
    "%YAML 1.2\n",
    "%TAG ! tag:x,2002:\n",
    "${X}",
    "${",
    "}",
    "$(touch X)",
    "`x`",
    "99999999999999999999999999999",
    "-1",
    "0",
    "-0",
    "1e400",
    ".nan",
    ".inf",
    "0x7fffffffffffffff",
    "18446744073709551616",
    "true",
    "yes",
    "on",
    "\u{0}",
    "\u{7}",
    "\u{85}",
    "\u{A0}",
    "\u{2028}",
    "\u{2029}",
    "\u{200B}",
    "\u{202E}",
    "\u{10FFFF}",
    "é",
    "𝄞",
    "👍🏽",
    "ｄａｔａｂａｓｅｓ",
    "~/x",
    "/",
    "..",
    "../..",
    "\\",
    "a\\0b",
];

/// Keys and values that appear in upkeep's YAML files.
const WORDS: &[&str] = &[
    "databases",
    "production",
    "staging",
    "backups",
    "dir",
    "keep",
    "schema",
    "state_dir",
    "storage_version",
    "v1.0.0",
    "v2.0.0",
    "name",
    "description",
    "env",
    "vars",
    "notify",
    "url",
    "on",
    "steps",
    "id",
    "run",
    "uses",
    "with",
    "rollback",
    "when",
    "timeout",
    "retries",
    "allow_failure",
    "integrity",
    "backup",
    "restore",
    "repair",
    "health",
    "git-pull",
    "migrate",
    "pending",
    "migrations",
    "stop-app",
    "start-app",
    "push",
    "deep",
    "tcp",
    "cmd",
    "interval",
    "remote",
    "branch",
    "check.ok",
    "x.failed",
    "5m",
    "0s",
];

/// Invalid UTF-8 and other raw bytes.
const RAW: &[&[u8]] = &[
    b"\xff",
    b"\xfe\xff",
    b"\xff\xfe",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
    b"\x00\x00",
    b"\xef\xbb\xbf",
];

fn insert(text: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    text.splice(at..at, bytes.iter().copied());
}

fn line_starts(text: &[u8]) -> Vec<usize> {
    std::iter::once(0)
        .chain(
            text.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .filter(|&i| i <= text.len())
        .collect()
}

fn lines(text: &[u8]) -> Vec<Vec<u8>> {
    text.split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// A nesting of `depth` levels in one of YAML's ways.
fn nesting(rng: &mut Rng, depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    match rng.below(6) {
        0 => out.extend("- ".repeat(depth).bytes()),
        1 => out.extend("[".repeat(depth).bytes()),
        2 => out.extend("{a: ".repeat(depth).bytes()),
        3 => {
            for level in 0..depth.min(5_000) {
                out.extend(format!("\n{}k{level}:", " ".repeat(level + 1)).bytes());
            }
        }
        4 => {
            out.extend("[".repeat(depth).bytes());
            out.extend("]".repeat(depth).bytes());
        }
        _ => {
            for level in 0..depth.min(5_000) {
                out.extend(format!("\n{}-", " ".repeat(level * 2)).bytes());
            }
        }
    }
    out
}

fn mutate_text(rng: &mut Rng, start: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut text = start.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let at = rng.below(text.len() + 1);
        let starts = line_starts(&text);
        let line_at = *rng.pick(&starts);
        match rng.below(16) {
            0 => {
                if !text.is_empty() {
                    let i = rng.below(text.len());
                    text[i] ^= 1 << rng.below(8);
                }
            }
            1 => text.insert(at, rng.next() as u8),
            2 => {
                let end = (at + 1 + rng.below(16)).min(text.len());
                text.drain(at.min(end)..end);
            }
            3 => {
                let token = rng.pick(TOKENS).as_bytes();
                insert(&mut text, at, token);
            }
            4 => {
                let token = rng.pick(TOKENS).as_bytes();
                insert(&mut text, line_at, token);
            }
            5 => {
                // A line twice: duplicate keys, duplicate steps.
                let mut all = lines(&text);
                if !all.is_empty() {
                    let i = rng.below(all.len());
                    let line = all[i].clone();
                    all.insert(rng.below(all.len() + 1), line);
                    text = all.concat();
                }
            }
            6 => {
                let mut all = lines(&text);
                if all.len() > 1 {
                    let from = rng.below(all.len());
                    let line = all.remove(from);
                    all.insert(rng.below(all.len() + 1), line);
                    text = all.concat();
                }
            }
            7 => {
                let other = rng.pick(corpus);
                let from = rng.below(other.len() + 1);
                let to = (from + rng.below(200)).min(other.len());
                insert(&mut text, at, &other[from..to]);
            }
            8 => {
                let depth = if rng.one_in(40) {
                    100_000
                } else {
                    1 + rng.below(150)
                };
                let nest = nesting(rng, depth);
                insert(&mut text, at, &nest);
            }
            9 => {
                // A value replaced: after the first `: ` of a line.
                if let Some(colon) = text[line_at..]
                    .windows(2)
                    .position(|w| w == b": ")
                    .map(|i| line_at + i + 2)
                {
                    let end = text[colon..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(text.len(), |i| colon + i);
                    let value = match rng.below(3) {
                        0 => rng.pick(TOKENS).as_bytes().to_vec(),
                        1 => rng.pick(WORDS).as_bytes().to_vec(),
                        _ => Vec::new(),
                    };
                    text.splice(colon..end, value).for_each(drop);
                }
            }
            10 => {
                let word = rng.pick(WORDS).as_bytes();
                let extra: &[u8] = match rng.below(3) {
                    0 => b": ",
                    1 => b":\n",
                    _ => b"",
                };
                insert(&mut text, at, &[word, extra].concat());
            }
            11 => insert(&mut text, 0, "\u{FEFF}".as_bytes()),
            12 => {
                let raw = rng.pick(RAW);
                insert(&mut text, at, raw);
            }
            13 => text.truncate(at),
            14 => {
                // Indentation changed, or a tab where spaces were.
                let indent: &[u8] = match rng.below(4) {
                    0 => b"\t",
                    1 => b" ",
                    2 => b"  ",
                    _ => b"        ",
                };
                insert(&mut text, line_at, indent);
            }
            _ => {
                // An anchor on a value and an alias to it somewhere else.
                insert(&mut text, at, b"&n ");
                let there = rng.below(text.len() + 1);
                insert(&mut text, there, b"*n");
            }
        }
    }
    text
}

/// Offsets of the fields `header::parse` reads.
const HEADER_FIELDS: &[usize] = &[
    0, 8, 12, 20, 4096, 4104, 4128, 4136, 8192, 8200, 8224, 8232, 12_280,
];

/// The start of a DuckDB file, and of the formats `header` names.
const MAGICS: &[&[u8]] = &[
    b"DUCK",
    b"SQLite format 3\0",
    b"PAR1",
    b"\x1f\x8b",
    b"PK\x03\x04",
];

const HEADER_VALUES: &[u64] = &[
    0,
    1,
    64,
    65,
    999,
    4096,
    262_144,
    1 << 20,
    1 << 31,
    1 << 32,
    1 << 63,
    u64::MAX,
    u64::MAX - 1,
];

fn mutate_header(rng: &mut Rng, start: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = start.to_vec();
    for _ in 0..1 + rng.below(6) {
        match rng.below(6) {
            0 | 1 => {
                let at = *rng.pick(HEADER_FIELDS) + rng.below(9);
                let value = if rng.one_in(3) {
                    rng.next()
                } else {
                    *rng.pick(HEADER_VALUES)
                };
                if at + 8 <= bytes.len() {
                    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
                }
            }
            2 => {
                if !bytes.is_empty() {
                    let i = rng.below(bytes.len());
                    bytes[i] = rng.next() as u8;
                }
            }
            3 => {
                let keep = rng.below(bytes.len() + 1);
                bytes.truncate(keep);
            }
            4 => {
                let other = rng.pick(corpus);
                let from = rng.below(other.len() + 1);
                let to = (from + rng.below(64)).min(other.len());
                let at = rng.below(bytes.len() + 1);
                insert(&mut bytes, at, &other[from..to]);
            }
            _ => {
                let magic = *rng.pick(MAGICS);
                let at = if rng.one_in(2) { 8 } else { 0 };
                if at + magic.len() <= bytes.len() {
                    bytes[at..at + magic.len()].copy_from_slice(magic);
                }
            }
        }
    }
    bytes
}

// ------------------------------------------------------------------ corpora

const CONFIGS: &[&str] = &[
    crate::support::CONFIG,
    "databases:\n  production: backend/data.duckdb\n  staging: backend/data_staging.duckdb\n\
     backups:\n  dir: backend/backups\n  keep: 5\nschema: backend/schema.sql\n",
    "databases: { production: data.duckdb }\nbackups: { dir: /var/backups/app, keep: 30 }\n\
     state_dir: .upkeep\nstorage_version: v1.1.0\n",
    "# Windows editor, anchors and aliases\r\ndatabases:\r\n  production: &db data/prod.duckdb\r\n  \
     staging: *db\r\nbackups: &b\r\n  dir: backups\r\nschema: \"schema.sql\"\r\n",
    "databases:\n  production: 'data/it''s.duckdb'\n  dev-1: \"d\\u00e9v.duckdb\"\nbackups:\n  \
     <<: {dir: backups}\n  keep: +3\nstate_dir: |-\n  state\n",
    "---\ndatabases:\n  production: data.duckdb\n...\n",
];

const PIPELINES: &[&str] = &[
    "name: p\ndescription: every key\nenv: production\nvars:\n  APP_URL: http://127.0.0.1:8000\n  \
     T: 60s\nnotify:\n  url: https://example.com/hook\n  on: [failure, rollback, success]\n\
     steps:\n  - id: stop\n    name: stop app\n    run: ./stop.sh\n    rollback: ./start.sh\n    \
     timeout: 90s\n    retries: 2\n  - id: check\n    uses: integrity\n    with: { deep: true }\n    \
     allow_failure: true\n  - uses: backup\n    with: { keep: 3, env: staging }\n    \
     when: check.ok\n  - uses: repair\n    when: check.failed\n  - uses: restore\n    \
     with: { backup: latest }\n    rollback: { uses: restore, with: { backup: latest } }\n  \
     - uses: migrate\n    with: { dir: migrations, rollback: none }\n  - uses: git-pull\n    \
     with: { remote: origin, branch: main }\n  - uses: health\n    \
     with: { url: \"${APP_URL}/health\", timeout: \"${T}\", interval: 1s }\n  - uses: health\n    \
     with: { tcp: \"127.0.0.1:8000\" }\n  - run: |\n      echo \"$APP_URL\"\n      exit 0\n    \
     rollback: { run: echo undo }\n",
    "steps: [{run: 'true'}, {uses: integrity, when: x.ok}, {id: x, uses: health, with: {cmd: 'true'}}]\n",
];

fn corpus_of(texts: &[&str], shipped: Option<&str>) -> Vec<Vec<u8>> {
    let mut corpus: Vec<Vec<u8>> = texts.iter().map(|t| t.as_bytes().to_vec()).collect();
    if let Some(folder) = shipped {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|entry| entry.path())
            .collect();
        files.sort();
        corpus.extend(files.iter().map(|path| crate::support::bytes(path)));
    }
    corpus
}

// ------------------------------------------------------------------- checks

/// A refused YAML file is bad input, and says where: every line of the
/// message that starts with the file's path goes on with `:LINE:COLUMN: `,
/// within the file, and the first line is one of them.
fn located(error: &anyhow::Error, path: &Path, input: &[u8]) -> Result<bool, String> {
    if exit_code(error) != code::BAD_INPUT {
        return Err(format!("exit code {} for {error:#}", exit_code(error)));
    }
    let message = format!("{error:#}");
    let prefix = format!("{}:", path.display());
    let last_line = line_breaks(input) + 1;
    let mut first = true;
    for line in message.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            if first {
                return Err(format!("no `{prefix}LINE:COLUMN:` in {message:?}"));
            }
            continue;
        };
        first = false;
        let mut parts = rest.splitn(3, ':');
        let (Some(line_no), Some(col), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("no LINE:COLUMN after the path in {line:?}"));
        };
        match (line_no.parse::<usize>(), col.parse::<usize>()) {
            (Ok(l), Ok(c)) if l >= 1 && c >= 1 && l <= last_line + 1 => {}
            _ => return Err(format!("bad position `{line_no}:{col}` in {line:?}")),
        }
    }
    Ok(false)
}

/// Line breaks as YAML parsers count them: `\n`, `\r\n` and a lone `\r`,
/// and (for some) NEL, LS and PS.
fn line_breaks(input: &[u8]) -> usize {
    let text = String::from_utf8_lossy(input);
    let mut breaks = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => breaks += 1,
            _ => {}
        }
    }
    breaks
}

fn check_config(input: &[u8]) -> Result<bool, String> {
    let path = Path::new("/fuzz/upkeep.yaml");
    match Config::parse(path, input) {
        Ok(config) => {
            let root = &config.root;
            for (name, db) in &config.databases {
                if db == root || db.file_name().is_none() {
                    return Err(format!("database `{name}` is `{}`", db.display()));
                }
            }
            for (what, dir) in [
                ("backups", &config.backups_dir),
                ("state_dir", &config.state_dir),
            ] {
                if dir.as_os_str().is_empty() {
                    return Err(format!("{what} is empty"));
                }
            }
            if config.schema.as_ref() == Some(root) {
                return Err("schema is the project folder".into());
            }
            Ok(true)
        }
        Err(error) => located(&error, path, input),
    }
}

fn fuzz_config() -> Config {
    Config::parse(
        Path::new("/fuzz/upkeep.yaml"),
        crate::support::CONFIG.as_bytes(),
    )
    .expect("the test config loads")
}

#[test]
fn config_files() {
    fuzz(
        "config",
        &corpus_of(CONFIGS, None),
        mutate_text,
        &check_config,
    );
}

#[test]
fn pipeline_files() {
    let config = fuzz_config();
    let path = Path::new("/fuzz/pipelines/p.yaml");
    fuzz(
        "pipeline",
        &corpus_of(PIPELINES, Some("pipelines")),
        mutate_text,
        &|input| match load::parse(path, input, &config) {
            Ok(_) => Ok(true),
            Err(error) => located(&error, path, input),
        },
    );
}

#[test]
fn database_headers() {
    let dir = tempfile::tempdir().unwrap();
    let mut corpus = Vec::new();
    for version in [None, Some("v1.0.0")] {
        let db = dir.path().join("h.duckdb");
        let _ = std::fs::remove_file(&db);
        crate::support::make_db(&db, version, 10);
        let mut bytes = crate::support::bytes(&db);
        bytes.truncate(header::BLOCKS_START as usize);
        corpus.push(bytes);
    }
    corpus.push(b"SQLite format 3\0".to_vec());
    corpus.push(Vec::new());
    fuzz("header", &corpus, mutate_header, &|bytes| {
        let mut rng = Rng::new(bytes.len() as u64);
        let sizes = [
            0,
            1,
            bytes.len() as u64,
            header::BLOCKS_START - 1,
            header::BLOCKS_START,
            header::BLOCKS_START + 262_144,
            rng.next(),
            u64::MAX,
        ];
        let mut accepted = false;
        for size in sizes {
            if let Ok(parsed) = header::parse(bytes, size) {
                if parsed.block_alloc_size == 0 {
                    return Err("a block size of 0".into());
                }
                let _ = parsed.storage_version();
                accepted = true;
            }
        }
        Ok(accepted)
    });
}

#[test]
fn backup_manifests() {
    let manifest = br#"{"env":"production","source":"/srv/app/data/prod.duckdb","created_at":"2026-11-29T08:00:00Z","size":798720,"blake3":"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262","tables":{"orders":30000,"users":3000},"duckdb_version":"v1.4.2","storage_version":"v1.0.0","upkeep_version":"0.1.0","verified":true}"#;
    let corpus = vec![manifest.to_vec(), b"{}".to_vec(), b"[]".to_vec()];
    fuzz("manifest", &corpus, mutate_text, &|bytes| {
        // Whatever it says, reading it returns.
        Ok(backups::parse_manifest(bytes).is_ok())
    });
}

/// A few mutated files through the real binary, as a user would hand them
/// over: an exit code, never a signal; bad input names the file (a YAML
/// error's line and column are checked in process, above; a file that
/// loads may still name a schema file that is not there).
#[test]
fn the_binary_on_mutated_files() {
    let settings = settings();
    let sandbox = crate::support::Sandbox::new();
    let configs = corpus_of(CONFIGS, None);
    let pipelines = corpus_of(PIPELINES, Some("pipelines"));
    for case in 0..40u64 {
        let mut rng = Rng::new(settings.seed ^ case ^ 0xB1_0A_B1_0A);
        let (file, args): (&str, &[&str]) = if case % 2 == 0 {
            let start = rng.pick(&configs).clone();
            let text = mutate_text(&mut rng, &start, &configs);
            std::fs::write(sandbox.path("upkeep.yaml"), &text).unwrap();
            ("upkeep.yaml", &["check", "production"])
        } else {
            sandbox.write("upkeep.yaml", crate::support::CONFIG);
            let start = rng.pick(&pipelines).clone();
            let text = mutate_text(&mut rng, &start, &pipelines);
            std::fs::create_dir_all(sandbox.path("pipelines")).unwrap();
            std::fs::write(sandbox.path("pipelines/p.yaml"), &text).unwrap();
            ("p.yaml", &["validate", "p"])
        };
        let run = sandbox.upkeep(args);
        assert!(
            matches!(run.code, Some(0..=2)),
            "case {case}: no exit code of upkeep's\n{run}"
        );
        if run.code == Some(2) {
            assert!(
                run.stderr.contains(file),
                "case {case}: bad input without its place\n{run}"
            );
        }
    }
}

// ------------------------------------------------------------ `app:` keys

/// Values for the keys of `app:`: good ones, and each way one can be bad
/// (for the kind of key it is, or another's).
const APP_VALUES: &[&str] = &[
    "./stop.sh",
    "'true'",
    "echo \"$UPKEEP_DB\"",
    "\"\"",
    "' '",
    "\"\\t\"",
    "~",
    "",
    "\"a\\0b\"",
    "http://127.0.0.1:8000/health",
    "'http://admin:pw@127.0.0.1:8000/h?token=x'",
    "https://127.0.0.1:8000/health",
    "http://127.0.0.1:99999/health",
    "http://127.0.0.1:0/",
    "http://127.0.0.1:/",
    "http://:8000/",
    "http:///x",
    "'http://[::1]/'",
    "'http://[::1'",
    "'http://h/a b'",
    "127.0.0.1:8000/health",
    "127.0.0.1:8000",
    "localhost:1",
    "'[::1]:80'",
    "'::1:80'",
    "no-port-here",
    "':80'",
    "host:0",
    "host:65536",
    "60s",
    "1ms",
    "0s",
    "0",
    "5",
    "-1s",
    "1e400",
    "10m",
    "99999999999y",
    "18446744073709551615s",
    "soon",
    "[60s]",
    "{a: 1}",
    "true",
    "'${X}'",
];

/// An `app:` section of random keys and values, in block or flow style,
/// sometimes with `environments:`.
fn app_section(rng: &mut Rng) -> String {
    let value = |rng: &mut Rng| rng.pick(APP_VALUES).to_string();
    let keys = |rng: &mut Rng, indent: &str| {
        let mut text = String::new();
        for key in ["stop", "start", "snapshot", "hook_timeout"] {
            if !rng.one_in(4) {
                text.push_str(&format!("{indent}{key}: {}\n", value(rng)));
            }
        }
        if !rng.one_in(3) {
            let mut health = Vec::new();
            for key in ["url", "tcp", "cmd", "timeout", "interval"] {
                if rng.one_in(if key == "timeout" { 2 } else { 3 }) {
                    health.push(format!("{key}: {}", value(rng)));
                }
            }
            match rng.below(3) {
                0 => text.push_str(&format!("{indent}health: {{ {} }}\n", health.join(", "))),
                1 => {
                    text.push_str(&format!("{indent}health:\n"));
                    for line in &health {
                        text.push_str(&format!("{indent}  {line}\n"));
                    }
                }
                _ => text.push_str(&format!("{indent}health: {}\n", value(rng))),
            }
        }
        text
    };
    let mut text = String::from("app:\n");
    text.push_str(&keys(rng, "  "));
    if rng.one_in(3) {
        text.push_str(&format!("  notify: {}\n", value(rng)));
    }
    if rng.one_in(3) {
        let env = *rng.pick(&["production", "staging", "nope"]);
        text.push_str(&format!("  environments:\n    {env}:\n"));
        text.push_str(&keys(rng, "      "));
    }
    text
}

/// A config with a random `app:` section; now and then, the byte-level
/// mutations above on top.
fn mutate_app(rng: &mut Rng, start: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = [start, app_section(rng).as_bytes()].concat();
    if rng.one_in(3) {
        bytes = mutate_text(rng, &bytes, corpus);
    }
    bytes
}

/// An accepted config holds nothing a run could trip on later: every app
/// has a probe that can be looked at, commands that can run, and time to
/// run them.
fn check_app_config(input: &[u8]) -> Result<bool, String> {
    let path = Path::new("/fuzz/upkeep.yaml");
    let accepted = check_config(input)?;
    if !accepted {
        return Ok(false);
    }
    let config = Config::parse(path, input).map_err(|error| format!("{error:#}"))?;
    for (env, app) in &config.apps {
        let commands = [Some(&app.stop), Some(&app.start), app.snapshot.as_ref()];
        for command in commands.into_iter().flatten() {
            upkeep::process::check_command(command)
                .map_err(|why| format!("`{env}` accepted with command {command:?}: {why}"))?;
        }
        if app.hook_timeout.is_zero() {
            return Err(format!("`{env}` accepted with a hook_timeout of zero"));
        }
        if let Some(health) = &app.health {
            upkeep::probe::Probe::of(
                health.url.as_deref(),
                health.tcp.as_deref(),
                health.cmd.as_deref(),
            )
            .map_err(|why| format!("`{env}` accepted with health {health:?}: {why}"))?;
            if health.timeout.is_zero() {
                return Err(format!("`{env}` accepted with a health timeout of zero"));
            }
        }
    }
    Ok(true)
}

#[test]
fn app_keys() {
    let corpus: Vec<Vec<u8>> = vec![crate::support::CONFIG.as_bytes().to_vec()];
    fuzz("app", &corpus, mutate_app, &check_app_config);
}

/// `app:` values through the real binary: `validate` and a dry-run of a
/// pipeline that stops and starts the app end with 0 or 2 (or, for the
/// dry-run, 1 with a blocker: a command whose program is not there), never
/// a signal, and bad input names upkeep.yaml.
#[test]
fn the_binary_on_mutated_app_keys() {
    let settings = settings();
    let sandbox = crate::support::Sandbox::new();
    std::fs::create_dir_all(sandbox.path("pipelines")).unwrap();
    sandbox.write(
        "pipelines/p.yaml",
        "env: production\nsteps:\n- uses: stop-app\n- uses: start-app\n",
    );
    sandbox.write("stop.sh", "#!/bin/sh\n");
    crate::support::executable(&sandbox.path("stop.sh"));
    for case in 0..30u64 {
        let mut rng = Rng::new(settings.seed ^ case ^ 0xA99_0A99);
        let text = format!("{}{}", crate::support::CONFIG, app_section(&mut rng));
        std::fs::write(sandbox.path("upkeep.yaml"), &text).unwrap();
        for args in [&["validate", "p"][..], &["run", "p", "--dry-run"]] {
            let run = sandbox.upkeep(args);
            let blocked = args[0] == "run"
                && run.code == Some(1)
                && run.stdout.contains("BLOCKER: the app's");
            assert!(
                matches!(run.code, Some(0 | 2)) || blocked,
                "case {case}: not 0 or 2\n{run}"
            );
            if run.code == Some(2) {
                assert!(
                    run.stderr.contains("upkeep.yaml"),
                    "case {case}: bad input without its place\n{run}"
                );
            }
        }
    }
}

// ------------------------------------------------------------ off-site keys

/// upkeep.yaml with every key of `backups.offsite`; each `{KEY}` is filled
/// with a value made of [`OFFSITE_PIECES`], or its line is left out.
const OFFSITE_CONFIG: &str = "databases:\n  production: data/prod.duckdb\nbackups:\n  offsite:\n    \
     url: {url}\n    endpoint: {endpoint}\n    region: {region}\n    encrypt_to: {encrypt_to}\n    \
     retention: {retention}\n";

/// What off-site values are made of: URLs' parts, good and bad (ports
/// past 65535, unclosed brackets, blanks, credentials), characters the
/// stores and URL parsers treat apart, regions, keys and identities.
const OFFSITE_PIECES: &[&str] = &[
    "s3://",
    "file://",
    "/",
    "upkeep-backups",
    "b",
    "http://",
    "https://",
    "127.0.0.1",
    "[::1]",
    "[::1",
    "]",
    "localhost",
    ":9",
    ":9000",
    ":99999",
    ":65536",
    ":0",
    ":",
    " x",
    " ",
    "%",
    "%zz",
    "%2F",
    "é",
    "~",
    "[",
    "{",
    "}",
    "^",
    "|",
    "*",
    "?",
    "#",
    "@",
    "user:pw@",
    "..",
    ".",
    "//",
    "\\",
    "\"",
    "'",
    "us-east-1",
    "us east",
    "age1",
    "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq",
    "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQ",
    "age-secret-key-1qq",
    "keys/backup.pub",
    "\u{0}",
    "\t",
    "\u{7f}",
    "\u{85}",
    "\u{202E}",
    "🦀",
    "-",
    "0",
    "-1",
    "99999999999999999999",
    "last",
    "daily",
    "~",
    "null",
];

/// `text` as one of YAML's scalar forms: plain, single- or double-quoted
/// (with YAML's escapes).
fn yaml_scalar(rng: &mut Rng, text: &str) -> String {
    match rng.below(3) {
        0 => text.to_string(),
        1 => format!("'{}'", text.replace('\'', "''")),
        _ => {
            let mut out = String::from("\"");
            for c in text.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
    }
}

/// A value for the off-site key `key`: mostly near what it takes (an
/// endpoint starts `http://127.0.0.1`), often broken, sometimes of another
/// type altogether.
fn offsite_value(rng: &mut Rng, key: &str) -> String {
    let words = |rng: &mut Rng, start: &str| {
        let mut text = start.to_string();
        for _ in 0..rng.below(5) {
            text.push_str(rng.pick::<&str>(OFFSITE_PIECES));
        }
        text
    };
    let start = match key {
        "url" => *rng.pick(&["s3://upkeep-backups/", "file:///tmp/", "s3://", ""]),
        "endpoint" => *rng.pick(&["http://127.0.0.1", "http://[::1]", "https://localhost", ""]),
        "region" => *rng.pick(&["us-east-1", ""]),
        _ => "",
    };
    match (key, rng.below(8)) {
        (_, 0) => rng
            .pick(&["~", "", "[]", "{}", "[a, [b]]", "{a: 1}"])
            .to_string(),
        ("encrypt_to", 1..=4) => {
            let items: Vec<String> = (0..rng.below(4))
                .map(|_| {
                    let item = words(rng, "");
                    yaml_scalar(rng, &item)
                })
                .collect();
            format!("[{}]", items.join(", "))
        }
        ("retention", 1..=6) => {
            let rules: Vec<String> = (0..rng.below(4))
                .map(|_| {
                    let rule = rng.pick(&[
                        "last", "daily", "weekly", "monthly", "yearly", "hourly", "within",
                    ]);
                    let count = rng.pick(&[
                        "0",
                        "1",
                        "7",
                        "-1",
                        "99999999999999999999",
                        "x",
                        "~",
                        "1.5",
                        "7d",
                        "2y5m7d3h",
                        "1d1d",
                        "9999999999y",
                        "0h",
                        "🦀d",
                    ]);
                    format!("{rule}: {count}")
                })
                .collect();
            format!("{{ {} }}", rules.join(", "))
        }
        _ => {
            let text = words(rng, start);
            yaml_scalar(rng, &text)
        }
    }
}

/// An off-site config: each key left out, or given a value from
/// [`offsite_value`]; now and then mutated as text on top.
fn mutate_offsite(rng: &mut Rng, start: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut text = String::from_utf8_lossy(start).into_owned();
    for key in ["url", "endpoint", "region", "encrypt_to", "retention"] {
        let slot = format!("{{{key}}}");
        let value = match (key, rng.below(4)) {
            ("url", _) | (_, 0 | 1) => offsite_value(rng, key),
            _ => {
                // Left out: its whole line goes.
                text = text.replace(&format!("    {key}: {slot}\n"), "");
                continue;
            }
        };
        text = text.replace(&slot, &value);
    }
    match rng.one_in(4) {
        true => mutate_text(rng, text.as_bytes(), corpus),
        false => text.into_bytes(),
    }
}

#[test]
fn offsite_keys() {
    fuzz(
        "offsite",
        &[OFFSITE_CONFIG.as_bytes().to_vec()],
        mutate_offsite,
        &check_config,
    );
}

/// Whether an endpoint's host is this machine's loopback: the only place
/// a fuzzed request may go. What follows the host (a port, a path, junk)
/// is the client's to refuse; the host is what a connection goes to.
fn loopback(endpoint: &str) -> bool {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or_default();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix("[::1]") {
        Some(after) if after.is_empty() || after.starts_with(':') => "[::1]",
        _ => authority.split(':').next().unwrap_or_default(),
    };
    ["127.0.0.1", "localhost", "[::1]"].contains(&host)
}

/// Off-site configs that load, through the binary as far as a request to
/// the store (on loopback, where nothing listens, or a folder, read only):
/// an exit code of upkeep's, never a panic in the S3 client.
#[test]
fn offsite_keys_through_the_binary() {
    let settings = settings();
    let sandbox = crate::support::Sandbox::new();
    let corpus = [OFFSITE_CONFIG.as_bytes().to_vec()];
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIAFUZZ0001"),
        ("AWS_SECRET_ACCESS_KEY", "fuzz-secret"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
    ];
    let mut ran = 0;
    for case in 0..40_000u64 {
        if ran == 20 {
            break;
        }
        let mut rng = Rng::new(settings.seed ^ case ^ 0x0FF5_17E5);
        let text = mutate_offsite(&mut rng, &corpus[0], &corpus);
        let path = sandbox.path("upkeep.yaml");
        let Ok(config) = Config::parse(&path, &text) else {
            continue;
        };
        // Mostly S3 endpoints (where the client panicked), a few folders.
        let reaches = match config.offsite.as_ref().map(|spec| &spec.target) {
            Some(upkeep::offsite::target::Target::S3 {
                endpoint: Some(endpoint),
                ..
            }) => loopback(endpoint),
            Some(upkeep::offsite::target::Target::File { .. }) => rng.one_in(8),
            _ => false,
        };
        if !reaches {
            continue;
        }
        std::fs::write(&path, &text).unwrap();
        let run = sandbox.upkeep_with(&["backups", "production", "--offsite"], &env);
        assert!(
            matches!(run.code, Some(0..=2)) && !run.stderr.contains("panicked"),
            "case {case}: no exit code of upkeep's\n{run}"
        );
        ran += 1;
    }
    assert_eq!(ran, 20, "too few configs that load reach a store");
}
