//! Putting a database back as a backup holds it by rewriting, in place,
//! only the blocks that differ: migrate's rollback after a migration that
//! failed, where the database differs from the restore point by a few
//! blocks and a whole copy would cost a full write of the file.
//!
//! Before anything is written, the backup is hashed against its manifest
//! (in parallel with the comparison), so a damaged backup changes nothing.
//! The differing blocks are then rewritten under a write lock (held since
//! the comparison), synced, and read back. A crash halfway leaves the database mixed, but the
//! journal still holds the rollback, and `upkeep recover` runs it again:
//! rewinding is idempotent, the backup is never touched.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::db::swap::{self, Shelf};
use crate::fsx;

/// DuckDB's block size: the unit compared and rewritten.
const BLOCK: usize = 256 << 10;

/// What a rewind did.
#[derive(Debug)]
pub struct Rewound {
    /// Bytes rewritten (the rest already matched).
    pub written: u64,
    /// The folder the database's `.wal` was moved to, if it had one.
    pub wal_aside: Option<PathBuf>,
}

/// Makes `db` byte for byte the file `source`, whose blake3 must be
/// `expected`, rewriting only the blocks that differ.
pub fn rewind(db: &Path, env: &str, source: &Path, expected: &blake3::Hash) -> Result<Rewound> {
    let _guard = swap::hold(db)?;
    let target = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(db)
        .with_context(|| format!("cannot open `{}`", db.display()))?;
    let backup =
        File::open(source).with_context(|| format!("cannot open `{}`", source.display()))?;
    // Its length now: a backup that reads shorter is refused below.
    let len = backup.metadata()?.len();
    let (hash, differing) = std::thread::scope(|scope| {
        let hash = scope.spawn(|| hash_all(&backup, len, source));
        let differing = differing_blocks(&backup, len, &target, source, db);
        (hash.join(), differing)
    });
    let hash = hash.map_err(|_| anyhow::anyhow!("the hashing thread panicked"))??;
    if hash != *expected {
        bail!(
            "`{}` no longer matches its manifest (damaged since it was made): the database was not touched; \
             check `upkeep backups {env}` and restore another one",
            source.display()
        );
    }
    let differing = differing?;
    // A `.wal` left beside the rewound file would be replayed into it.
    let wal = swap::wal_of(db);
    let wal_aside = if wal.exists() {
        let folder = swap::new_shelf_folder(db, env, Shelf::Aside)?;
        let kept = folder.join(wal.file_name().unwrap_or_default());
        fsx::rename_synced(&wal, &kept)?;
        fsx::make_private(&kept);
        Some(folder)
    } else {
        None
    };
    let mut buffer = vec![0u8; BLOCK];
    let mut written = 0u64;
    for &offset in &differing {
        let n = read_block(&backup, &mut buffer, offset, len, source)?;
        target
            .write_all_at(&buffer[..n], offset)
            .with_context(|| format!("cannot write `{}` (is the disk full?)", db.display()))?;
        written += n as u64;
    }
    target
        .set_len(len)
        .and_then(|()| target.sync_all())
        .with_context(|| format!("cannot sync `{}`", db.display()))?;
    // The other blocks were found equal under the lock: reading back what
    // was written is enough.
    let mut held = vec![0u8; BLOCK];
    let mut same = target.metadata()?.len() == len;
    for &offset in &differing {
        let n = read_block(&backup, &mut buffer, offset, len, source)?;
        let m = read_at_most(&target, &mut held[..n], offset, db)?;
        same &= m == n && buffer[..n] == held[..n];
    }
    if !same {
        bail!(
            "`{}` still differs from `{}` after being rewritten: run `upkeep recover` to try again",
            db.display(),
            source.display()
        );
    }
    Ok(Rewound { written, wal_aside })
}

/// The offsets of the blocks of `backup` (`len` bytes) that `target` does
/// not hold.
fn differing_blocks(
    backup: &File,
    len: u64,
    target: &File,
    source: &Path,
    db: &Path,
) -> Result<Vec<u64>> {
    let mut wanted = vec![0u8; BLOCK];
    let mut held = vec![0u8; BLOCK];
    let mut differing = Vec::new();
    let mut offset = 0u64;
    while offset < len {
        let n = read_block(backup, &mut wanted, offset, len, source)?;
        let m = read_at_most(target, &mut held[..n], offset, db)?;
        if m < n || wanted[..n] != held[..n] {
            differing.push(offset);
        }
        offset += n as u64;
    }
    Ok(differing)
}

/// The blake3 hash of the `len` bytes of `backup`, read through the same
/// open file as the comparison and the rewrite.
fn hash_all(backup: &File, len: u64, source: &Path) -> Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < len {
        let n = read_block(backup, &mut buffer, offset, len, source)?;
        hasher.update(&buffer[..n]);
        offset += n as u64;
    }
    Ok(hasher.finalize())
}

/// Reads the block of `backup` at `offset` (shorter at the end of its
/// `len` bytes); a backup that ends sooner changed meanwhile: an error.
fn read_block(
    backup: &File,
    buffer: &mut [u8],
    offset: u64,
    len: u64,
    source: &Path,
) -> Result<usize> {
    let want = usize::try_from(len - offset).map_or(buffer.len(), |left| left.min(buffer.len()));
    let n = read_at_most(backup, &mut buffer[..want], offset, source)?;
    if n < want {
        bail!(
            "`{}` became shorter while being read (it changed meanwhile): the rollback stops; \
             look at the backups, then `upkeep recover` runs it again",
            source.display()
        );
    }
    Ok(n)
}

/// Reads into `buffer` from `offset` until it is full or the file ends.
fn read_at_most(file: &File, buffer: &mut [u8], offset: u64, path: &Path) -> Result<usize> {
    let mut done = 0;
    while done < buffer.len() {
        let n = file
            .read_at(&mut buffer[done..], offset + done as u64)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}
