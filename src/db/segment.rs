//! `.wal` segments: what a running app committed since the last shipment,
//! as bytes that DuckDB replays once put after what was shipped before. The
//! ground under continuous off-site copies (see docs/offsite.md).
//!
//! DuckDB appends to a `.wal` until a checkpoint. The checkpoint first
//! writes a `CHECKPOINT` entry into it and sends every later commit to
//! `DB.wal.checkpoint`; once its header is on disk, it removes the `.wal` or
//! puts that other file in its place (docs/live-copies.md, B to E). Before
//! that, DuckDB only ever removes entries after the last `WAL_FLUSH` (a
//! commit that failed). So, for one `.wal`, its bytes up to the end of any
//! `WAL_FLUSH` entry are a `.wal` that DuckDB replays onto the database
//! file of the checkpoint it names, giving exactly the commits before that
//! entry; and bytes read once up to a `WAL_FLUSH` stay as they were.
//!
//! A [`Cursor`] says which `.wal` (its version entry: the database's
//! identifier and the checkpoint iteration) and how much of it was
//! shipped. [`next`] reads what follows: whole commits up to the last
//! `WAL_FLUSH`, never past a `CHECKPOINT` entry (no commit follows one in
//! that file). A torn tail waits for the next read. A `.wal` that is gone,
//! another one, or shorter than what was shipped ends the cursor: the
//! database needs a new point.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::db::blocks;
use crate::db::live::{Entry, entry_type};
use crate::db::wal::{CHECKSUMMED_VERSION, Fields, MAX_ENTRY, WAL_CHECKPOINT, WAL_FLUSH};

/// Where the shipping of one `.wal` stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The `.wal`'s version entry, as its first bytes: the database's
    /// identifier and the checkpoint iteration.
    head: Vec<u8>,
    /// The checkpoint iteration the `.wal` follows (a point of the database
    /// file at that iteration is what it replays onto).
    pub iteration: Option<u64>,
    /// Bytes shipped: the version entry and whole commits.
    pub offset: u64,
    /// Where the last `WAL_FLUSH` shipped starts, and its frame (size and
    /// checksum): still there while the file is the same.
    last: (u64, [u8; 16]),
    /// The file's device and inode: DuckDB replaces a `.wal` only by
    /// removing it or renaming another over it (docs/live-copies.md, E).
    file: (u64, u64),
}

impl Cursor {
    /// The cursor of a copy of a `.wal` (a live copy's), made to follow
    /// the live `.wal` it was copied from, `file` (its device and inode):
    /// the copy is a prefix of it up to a `WAL_FLUSH`.
    pub fn following(self, file: (u64, u64)) -> Cursor {
        Cursor { file, ..self }
    }
}

/// What [`next`] found.
#[derive(Debug)]
pub enum Next {
    /// Whole commits after the cursor (from the `.wal`'s start without
    /// one): `bytes` go right after what was shipped before.
    Commits {
        bytes: Vec<u8>,
        commits: u64,
        cursor: Cursor,
        /// A `CHECKPOINT` entry follows them: this `.wal` has no more
        /// commits to give (later ones go to the next checkpoint's `.wal`).
        last: bool,
    },
    /// Nothing committed since.
    Nothing,
    /// The cursor's `.wal` has no more commits to give: a checkpoint began
    /// or ended, or the file was replaced. Says which.
    Ended(String),
}

/// The commits of the `.wal` at `path` after `cursor` (see the module
/// docs). An error is a `.wal` upkeep does not read, or one it cannot.
pub fn next(path: &Path, cursor: Option<&Cursor>) -> Result<Next> {
    let ended = |why: &str| Ok(Next::Ended(format!("`{}` {why}", path.display())));
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return match cursor {
                Some(_) => ended("is gone (a checkpoint ended)"),
                None => Ok(Next::Nothing),
            };
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read `{}`", path.display()));
        }
    };
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let (len, identity) = (meta.len(), (meta.dev(), meta.ino()));
    let mut head = vec![0u8; len.min(256) as usize];
    file.read_exact_at(&mut head, 0)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let mut fields = Fields {
        bytes: &head,
        at: 0,
    };
    let version = match fields.entry_while_written() {
        Entry::Whole(version) => version,
        Entry::Short if cursor.is_some() => {
            return ended("was replaced (it is being written anew)");
        }
        Entry::Short => return Ok(Next::Nothing),
        Entry::Foreign => bail!(
            "`{}` does not start with a DuckDB .wal header",
            path.display()
        ),
    };
    if version.number != CHECKSUMMED_VERSION {
        bail!(
            "`{}` is a version {} .wal, upkeep reads version {CHECKSUMMED_VERSION} (3 is encrypted)",
            path.display(),
            version.number
        );
    }
    head.truncate(fields.at);
    let start = match cursor {
        None => head.len() as u64,
        Some(cursor) => {
            if cursor.head != head || cursor.file != identity {
                return ended("is another .wal (a checkpoint ended)");
            }
            if len < cursor.offset {
                return ended("is shorter than what was shipped (it was replaced)");
            }
            let mut frame = [0u8; 16];
            file.read_exact_at(&mut frame, cursor.last.0)
                .with_context(|| format!("cannot read `{}`", path.display()))?;
            if frame != cursor.last.1 {
                return ended("was replaced (its last commit shipped is not there)");
            }
            cursor.offset
        }
    };
    let mut rest = vec![0u8; (len - start) as usize];
    file.read_exact_at(&mut rest, start)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let (mut at, mut kept, mut commits, mut last, mut checkpoint) = (0, 0, 0, None, false);
    while let Some(frame) = rest.get(at..at + 16) {
        let size = u64::from_le_bytes(frame[..8].try_into().unwrap_or_default());
        let stored = u64::from_le_bytes(frame[8..].try_into().unwrap_or_default());
        if size == 0 || size > MAX_ENTRY {
            break;
        }
        let Some(payload) = rest.get(at + 16..at + 16 + size as usize) else {
            break;
        };
        if blocks::checksum(payload) != stored {
            break;
        }
        match entry_type(payload) {
            Some(WAL_FLUSH) => {
                let mut whole = [0u8; 16];
                whole.copy_from_slice(frame);
                last = Some((start + at as u64, whole));
                kept = at + 16 + size as usize;
                commits += 1;
            }
            Some(WAL_CHECKPOINT) => {
                checkpoint = true;
                break;
            }
            _ => {}
        }
        at += 16 + size as usize;
    }
    match last {
        Some(last) => {
            rest.truncate(kept);
            let bytes = match cursor {
                Some(_) => rest,
                None => [head.as_slice(), &rest].concat(),
            };
            Ok(Next::Commits {
                bytes,
                commits,
                cursor: Cursor {
                    head,
                    iteration: version.checkpoint_iteration,
                    offset: start + kept as u64,
                    last,
                    file: identity,
                },
                last: checkpoint,
            })
        }
        None if checkpoint => ended("is being checkpointed"),
        None => Ok(Next::Nothing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::live::tests::{CHECKPOINT, FLUSH, INSERT, wal};

    fn write(dir: &tempfile::TempDir, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join("db.wal");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn commits(next: Next) -> (Vec<u8>, u64, Cursor) {
        match next {
            Next::Commits {
                bytes,
                commits,
                cursor,
                ..
            } => (bytes, commits, cursor),
            other => panic!("no commits: {other:?}"),
        }
    }

    #[test]
    fn segments_put_end_to_end_are_the_wal_up_to_its_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let whole = wal(&[INSERT, FLUSH, INSERT, INSERT, FLUSH, INSERT]);
        // Cut inside the last entry: a torn tail, never shipped.
        let path = write(&dir, &whole[..whole.len() - 3]);
        let (first, count, cursor) = commits(next(&path, None).unwrap());
        assert_eq!(count, 2);
        let two = wal(&[INSERT, FLUSH, INSERT, INSERT, FLUSH]);
        assert_eq!(first, two);
        assert_eq!(cursor.offset, two.len() as u64);
        // Nothing new: nothing to ship.
        assert!(matches!(next(&path, Some(&cursor)).unwrap(), Next::Nothing));
        // The tail is whole now, and one more commit follows.
        let more = wal(&[INSERT, FLUSH, INSERT, INSERT, FLUSH, INSERT, INSERT, FLUSH]);
        write(&dir, &more);
        let (second, count, cursor) = commits(next(&path, Some(&cursor)).unwrap());
        assert_eq!(count, 1);
        assert_eq!([first, second].concat(), more);
        assert_eq!(cursor.offset, more.len() as u64);
    }

    #[test]
    fn a_checkpoint_entry_ends_the_wal_for_shipping() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, &wal(&[INSERT, FLUSH, CHECKPOINT, INSERT, FLUSH]));
        let Next::Commits {
            bytes,
            commits: count,
            cursor,
            last,
        } = next(&path, None).unwrap()
        else {
            panic!("no commits")
        };
        assert_eq!((bytes, count, last), (wal(&[INSERT, FLUSH]), 1, true));
        match next(&path, Some(&cursor)).unwrap() {
            Next::Ended(why) => assert!(why.contains("being checkpointed"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_wal_gone_replaced_or_shorter_ends_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, &wal(&[INSERT, FLUSH, INSERT, FLUSH]));
        let (_, _, cursor) = commits(next(&path, None).unwrap());
        let ended = |bytes: Option<&[u8]>| {
            match bytes {
                Some(bytes) => std::fs::write(&path, bytes).unwrap(),
                None => std::fs::remove_file(&path).unwrap(),
            }
            match next(&path, Some(&cursor)).unwrap() {
                Next::Ended(why) => why,
                other => panic!("{other:?}"),
            }
        };
        assert!(ended(Some(&wal(&[INSERT, FLUSH]))).contains("shorter"));
        // As long, but other commits: the last one shipped is not there.
        assert!(ended(Some(&wal(&[INSERT, FLUSH, FLUSH, INSERT]))).contains("replaced"));
        assert!(ended(Some(&[0u8; 4])).contains("replaced"));
        assert!(ended(None).contains("gone"));
        // The same bytes, renamed over it: another file.
        let (_, _, cursor) = commits(next(&write(&dir, &wal(&[INSERT, FLUSH])), None).unwrap());
        let other = dir.path().join("other.wal");
        std::fs::write(&other, wal(&[INSERT, FLUSH])).unwrap();
        std::fs::rename(&other, &path).unwrap();
        match next(&path, Some(&cursor)).unwrap() {
            Next::Ended(why) => assert!(why.contains("another"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
