//! Live copies onto a kept copy: a replicator's points. Its copy of the
//! database stays from one point to the next, and each next live copy
//! reads only what changed, by the same rule and in the same attempts as
//! [`super::copy`]. Step 3 then copies the headers (H1), and only the
//! blocks whose stored checksum differs from the kept copy's, failed
//! their checksum when they were copied, or lie past the kept copy's end.
//! Each one is checked as it is copied, and the copy takes the file's length.
//!
//! This holds for the same reason as an update's top-up
//! ([`crate::db::topup`]): DuckDB writes a block's checksum with every
//! write of it. A block in use by H1 is not written to while H1 stands
//! (the rule's proof, `docs/live-copies.md`). So its stored checksum, read
//! during the attempt, is that of its content. When that checksum is the
//! one the kept copy holds for the block, so is the content, which
//! verified when it was copied. The blocks in use that were copied must
//! verify, as in every live copy. A free block's bytes do not matter.
//!
//! The kept copy is scratch: it is not synced, and a replicator that
//! starts again starts from an empty one.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Copied, Copying, Files, Refused, attempts, fill_at, io, read_headers};
use crate::db::blocks;
use crate::db::header::{BLOCKS_START, Header};
use crate::fsx;

/// A kept copy and what it holds.
pub struct Base {
    /// The copy of the database file, and where the `.wal` copy goes.
    pub db: PathBuf,
    wal: PathBuf,
    /// The block size the checksums are of.
    block: u64,
    /// The copy's length.
    size: u64,
    /// The stored checksum of each block of the copy, by block id.
    checksums: Vec<u64>,
    /// Blocks that failed their checksum, or were cut short, when copied:
    /// copied again each time.
    suspect: BTreeSet<u64>,
    /// The byte ranges written to the copy since [`Base::take_changed`].
    changed: Vec<(u64, u64)>,
}

impl Base {
    /// An empty kept copy in `dir` (the first copy onto it reads every
    /// block), named like `db`.
    pub fn new(db: &Path, dir: &Path) -> Result<Base, Refused> {
        let name = db.file_name().unwrap_or_else(|| "data.duckdb".as_ref());
        let copy = dir.join(name);
        fsx::private_options()
            .write(true)
            .create_new(true)
            .open(&copy)
            .map_err(io(&copy))?;
        Ok(Base {
            wal: fsx::with_suffix(&copy, ".wal"),
            db: copy,
            block: 0,
            size: 0,
            checksums: Vec::new(),
            suspect: BTreeSet::new(),
            changed: Vec::new(),
        })
    }

    /// The `(offset, length)` ranges of the copy written since the last
    /// call (every attempt's, kept or not).
    pub fn take_changed(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.changed)
    }

    /// `bytes` were written at block `id`; `ok` when they are a whole
    /// block that verifies.
    pub(super) fn wrote(&mut self, id: u64, offset: u64, bytes: &[u8], ok: bool) {
        let index = id as usize;
        if self.checksums.len() <= index {
            self.checksums.resize(index + 1, 0);
        }
        let mut stored = [0u8; 8];
        let len = bytes.len().min(8);
        stored[..len].copy_from_slice(&bytes[..len]);
        self.checksums[index] = u64::from_le_bytes(stored);
        match ok {
            true => self.suspect.remove(&id),
            false => self.suspect.insert(id),
        };
        self.changed.push((offset, bytes.len() as u64));
    }
}

/// A live copy of `db` (held by a running app) and its `.wal` at `wal`,
/// onto `base`: see the module docs. Not synced.
pub fn copy_onto(db: &Path, wal: &Path, base: &mut Base) -> Result<Copied, Refused> {
    let live = File::open(db).map_err(io(db))?;
    let copy = File::options()
        .read(true)
        .write(true)
        .open(&base.db)
        .map_err(io(&base.db))?;
    match std::fs::remove_file(&base.wal) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(&base.wal)(error));
        }
        _ => {}
    }
    let wal_copy = fsx::private_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&base.wal)
        .map_err(io(&base.wal))?;
    let (copy_path, wal_copy_path) = (base.db.clone(), base.wal.clone());
    let files = Files {
        db,
        wal,
        live: &live,
        copy: &copy,
        copy_path: &copy_path,
        wal_copy: &wal_copy,
        wal_copy_path: &wal_copy_path,
    };
    let kept = attempts(&files, Some(base))?;
    let wal = match kept.wal_commits {
        0 => {
            let _ = std::fs::remove_file(&wal_copy_path);
            None
        }
        _ => Some(wal_copy_path),
    };
    Ok(kept.copied(copy_path, wal))
}

/// Step 3 onto a kept copy: H1, then the blocks that changed (see the
/// module docs). `bad`: the blocks below the header's block count that
/// failed their checksum as they were copied.
pub(super) fn top_up_file(
    files: &Files,
    header: &Header,
    h0: &[u8],
    base: &mut Base,
) -> Result<Copying, Refused> {
    let h1 = read_headers(files.live).map_err(io(files.db))?;
    if h1 != h0 {
        return Ok(Copying::HeaderMoved);
    }
    let started = Instant::now();
    let block = header.block_alloc_size;
    if block != base.block {
        // Another block size: nothing kept is of use.
        base.block = block;
        base.size = 0;
        base.checksums.clear();
        base.suspect.clear();
    }
    files
        .copy
        .write_all_at(&h1, 0)
        .map_err(io(files.copy_path))?;
    base.changed.push((0, BLOCKS_START));
    let mut size = files.live.metadata().map_err(io(files.db))?.len();
    let stored = match blocks::stored_checksums(files.live, block, size) {
        Ok(stored) => stored,
        // Cut meanwhile: only a checkpoint that ended truncates the file.
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Ok(Copying::HeaderMoved);
        }
        Err(error) => return Err(io(files.db)(error)),
    };
    let mut bad = Vec::new();
    let mut bytes = vec![0u8; block as usize];
    let count = size.saturating_sub(BLOCKS_START).div_ceil(block);
    for id in 0..count {
        let offset = BLOCKS_START + id * block;
        let kept = offset + block <= base.size
            && !base.suspect.contains(&id)
            && stored.get(id as usize).is_some()
            && stored.get(id as usize) == base.checksums.get(id as usize);
        if kept {
            continue;
        }
        let want = block.min(size - offset) as usize;
        let read = fill_at(files.live, &mut bytes[..want], offset).map_err(io(files.db))?;
        let piece = &bytes[..read];
        let ok = read as u64 == block && blocks::block_ok(piece);
        if !ok && id < header.block_count {
            bad.push(id);
        }
        files
            .copy
            .write_all_at(piece, offset)
            .map_err(io(files.copy_path))?;
        base.wrote(id, offset, piece, ok);
        if read < want {
            // The file was cut meanwhile: it ends here.
            size = offset + read as u64;
            break;
        }
    }
    files.copy.set_len(size).map_err(io(files.copy_path))?;
    base.size = size;
    base.checksums
        .truncate((size.saturating_sub(BLOCKS_START) / block) as usize);
    base.suspect.retain(|&id| BLOCKS_START + id * block < size);
    Ok(Copying::Done {
        bad,
        size,
        cloned: false,
        took: started.elapsed(),
    })
}
