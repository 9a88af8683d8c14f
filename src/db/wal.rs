//! The `.wal` beside a database: can DuckDB replay it?
//!
//! DuckDB skips a `.wal` it cannot parse, silently, and the first
//! read-write open (a checkpoint, a backup, the app itself) then deletes it
//! with whatever was committed in it. So upkeep reads the `.wal` itself
//! first. Its format (DuckDB `write_ahead_log.cpp`, `wal_replay.cpp`): a
//! version entry, not framed; then entries framed as a u64 size, the u64
//! checksum of the payload (DuckDB's block checksum) and the payload.
//!
//! What is *not* a problem: a torn tail. A crash while the last entries
//! were written leaves them short or garbled at the very end; they were
//! never committed (a commit returns only after its flush is synced), and
//! DuckDB drops them by design. What is: a file that is not a `.wal` at
//! all, one written for another database, or one that cannot be read past
//! some entry while more follows: DuckDB stops there, and what follows is
//! lost.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::db::blocks;
use crate::db::header::Header;
use crate::fsx;

/// Entries larger than this are not entries: a size read from garbage.
pub(super) const MAX_ENTRY: u64 = 1 << 32;
/// `WALType::WAL_VERSION`, and the version whose entries carry checksums.
pub(super) const WAL_VERSION_ENTRY: u64 = 98;
/// The types of the entries a live copy looks for (`WALType`).
pub(super) const WAL_CHECKPOINT: u64 = 99;
pub(super) const WAL_FLUSH: u64 = 100;
pub(super) const CHECKSUMMED_VERSION: u64 = 2;
/// Field ids of DuckDB's binary serializer (little-endian u16).
pub(super) const FIELD_TYPE: u16 = 100;
pub(super) const FIELD_VERSION: u16 = 101;
pub(super) const FIELD_DB_IDENTIFIER: u16 = 102;
pub(super) const FIELD_CHECKPOINT_ITERATION: u16 = 103;
pub(super) const END_OF_OBJECT: u16 = 0xFFFF;

/// The `.wal` file DuckDB keeps beside `db`.
pub fn path_of(db: &Path) -> PathBuf {
    fsx::with_suffix(db, ".wal")
}

/// Has DuckDB replay the `.wal` beside `db` (a copy of upkeep's, never an
/// app's file) into it and checkpoint, and checks that DuckDB removed the
/// `.wal` then: one left would be replayed again by whoever opens `db`.
/// The error says which of the two went wrong; the caller says about what.
pub fn replay(db: &Path) -> Result<()> {
    crate::db::open::open(db, crate::db::open::Access::Exclusive)?
        .execute_batch("CHECKPOINT")
        .map_err(|error| anyhow::anyhow!("DuckDB cannot replay its .wal ({error})"))?;
    if path_of(db).exists() {
        anyhow::bail!("DuckDB left its .wal after the checkpoint");
    }
    Ok(())
}

/// Why the `.wal` beside `db` cannot be replayed, if it cannot. `header`
/// is the database's own. Formats upkeep cannot judge (a `.wal` of an
/// encrypted database, or from DuckDB before 1.1) are left to DuckDB.
pub fn unreplayable(db: &Path, header: &Header) -> Result<Option<String>> {
    let wal = path_of(db);
    let mut file = match File::open(&wal) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read `{}`", wal.display()));
        }
    };
    let len = file.metadata()?.len();
    judge(&mut file, len, header).with_context(|| format!("cannot read `{}`", wal.display()))
}

fn judge(
    file: &mut (impl Read + Seek),
    len: u64,
    header: &Header,
) -> std::io::Result<Option<String>> {
    if len == 0 {
        return Ok(None);
    }
    let mut head = vec![0u8; len.min(256) as usize];
    file.read_exact(&mut head)?;
    let mut reader = Fields {
        bytes: &head,
        at: 0,
    };
    let version = match reader.version_entry() {
        Ok(Some(version)) => version,
        // A version entry upkeep cannot read to its end: DuckDB judges.
        Ok(None) => return Ok(None),
        Err(()) if head.iter().all(|&byte| byte == 0) && len <= head.len() as u64 => {
            // Zeros only: a file created and never written.
            return Ok(None);
        }
        Err(()) => {
            return Ok(Some(
                "it does not start with a DuckDB .wal header".to_string(),
            ));
        }
    };
    if version.number != CHECKSUMMED_VERSION {
        return Ok(None);
    }
    if let Some(identifier) = version.db_identifier
        && header.db_identifier != [0; 16]
        && identifier != header.db_identifier
    {
        return Ok(Some(
            "it was written for another database (its identifier differs)".to_string(),
        ));
    }
    if let Some(iteration) = version.checkpoint_iteration
        && iteration != header.iteration
        && iteration + 1 != header.iteration
    {
        return Ok(Some(format!(
            "it was written at checkpoint {iteration}, and the database is at checkpoint {}",
            header.iteration
        )));
    }
    let mut at = reader.at as u64;
    file.seek(std::io::SeekFrom::Start(at))?;
    let mut file = std::io::BufReader::with_capacity(1 << 20, file);
    let mut entries = 0u64;
    while at < len {
        let left = len - at;
        let mut frame = [0u8; 16];
        if left < 16 {
            return Ok(None);
        }
        file.read_exact(&mut frame)?;
        let size = u64::from_le_bytes(frame[..8].try_into().unwrap_or_default());
        let stored = u64::from_le_bytes(frame[8..].try_into().unwrap_or_default());
        if size == 0 || size > MAX_ENTRY {
            let torn = rest_is_zero(&mut file, left - 16)?;
            return Ok((!torn).then(|| unreadable_after(entries, at, len)));
        }
        if size > left - 16 {
            // The last entry, cut short while it was written.
            return Ok(None);
        }
        if checksum_of(&mut file, size)? != stored {
            let last = size == left - 16;
            return Ok((!last).then(|| unreadable_after(entries, at, len)));
        }
        entries += 1;
        at += 16 + size;
    }
    Ok(None)
}

fn unreadable_after(entries: u64, at: u64, len: u64) -> String {
    format!(
        "DuckDB stops at byte {at} of {len} (after {entries} readable entries): the entry there is damaged, \
         and the {} bytes after it are never replayed",
        len - at
    )
}

/// Whether the next `count` bytes are all zero (a file extended but never
/// written: a torn tail).
fn rest_is_zero(file: &mut impl Read, count: u64) -> std::io::Result<bool> {
    let mut buffer = vec![0u8; 1 << 16];
    let mut left = count;
    while left > 0 {
        let take = left.min(buffer.len() as u64) as usize;
        file.read_exact(&mut buffer[..take])?;
        if buffer[..take].iter().any(|&byte| byte != 0) {
            return Ok(false);
        }
        left -= take as u64;
    }
    Ok(true)
}

/// DuckDB's checksum of the next `size` bytes, read in pieces: the words'
/// terms are xor-ed, so pieces of whole words can be summed apart.
fn checksum_of(file: &mut impl Read, size: u64) -> std::io::Result<u64> {
    const START: u64 = 5381;
    let mut buffer = vec![0u8; (size.min(1 << 20)) as usize];
    let mut left = size;
    let mut sum = START;
    while left > 0 {
        let take = left.min(buffer.len() as u64) as usize;
        file.read_exact(&mut buffer[..take])?;
        sum ^= blocks::checksum(&buffer[..take]) ^ START;
        left -= take as u64;
    }
    Ok(sum)
}

/// What the version entry says.
pub(super) struct VersionEntry {
    pub(super) number: u64,
    pub(super) db_identifier: Option<[u8; 16]>,
    pub(super) checkpoint_iteration: Option<u64>,
}

/// DuckDB's binary serializer: u16 field ids, LEB128 values.
/// Shared with `live`, which reads a `.wal` while it is written.
pub(super) struct Fields<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) at: usize,
}

impl Fields<'_> {
    /// The version entry: `Err` when the file does not start like one (not
    /// a `.wal`); `Ok(None)` when it does but holds what upkeep does not
    /// know (a newer DuckDB's fields: DuckDB judges it).
    fn version_entry(&mut self) -> Result<Option<VersionEntry>, ()> {
        let starts_like_one = self.field() == Some(FIELD_TYPE)
            && self.varint() == Some(WAL_VERSION_ENTRY)
            && self.field() == Some(FIELD_VERSION);
        if !starts_like_one {
            return Err(());
        }
        Ok(self.version_fields())
    }

    fn version_fields(&mut self) -> Option<VersionEntry> {
        let mut entry = VersionEntry {
            number: self.varint()?,
            db_identifier: None,
            checkpoint_iteration: None,
        };
        loop {
            match self.field()? {
                FIELD_DB_IDENTIFIER => {
                    if self.varint()? != 16 {
                        return None;
                    }
                    let mut identifier = [0u8; 16];
                    for byte in &mut identifier {
                        *byte = u8::try_from(self.varint()?).ok()?;
                    }
                    entry.db_identifier = Some(identifier);
                }
                FIELD_CHECKPOINT_ITERATION => entry.checkpoint_iteration = Some(self.varint()?),
                END_OF_OBJECT => return Some(entry),
                _ => return None,
            }
        }
    }

    pub(super) fn field(&mut self) -> Option<u16> {
        let bytes = self.bytes.get(self.at..self.at + 2)?;
        self.at += 2;
        Some(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    pub(super) fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at)?;
            self.at += 1;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
}

/// Keeps a copy of an unreplayable `.wal` beside `db` in a new folder of
/// `quarantine/`, before anything opens the database for writing (which
/// would delete it). Returns where the copy is, or `None` when the `.wal`
/// is absent or replays.
pub fn keep_if_unreplayable(db: &Path, env: &str) -> Result<Option<(PathBuf, String)>> {
    let Ok(Ok(header)) = crate::db::header::read(db) else {
        return Ok(None);
    };
    let Some(reason) = unreplayable(db, &header)? else {
        return Ok(None);
    };
    let wal = path_of(db);
    // Several opens in one run (a migration's, its restore point's) find
    // the same file: one copy is enough.
    if let Some(kept) = kept_copy(db, &wal)? {
        return Ok(Some((kept, reason)));
    }
    let folder = crate::db::swap::new_shelf_folder(db, env, crate::db::swap::Shelf::Quarantine)?;
    let kept = folder.join(wal.file_name().unwrap_or_else(|| "data.wal".as_ref()));
    fsx::copy_private(&wal, &kept)
        .with_context(|| format!("cannot keep `{}` in `{}`", wal.display(), folder.display()))?;
    Ok(Some((kept, reason)))
}

/// A copy of `wal` already in a folder of `quarantine/` beside `db`, byte
/// for byte.
fn kept_copy(db: &Path, wal: &Path) -> Result<Option<PathBuf>> {
    let quarantine = crate::db::swap::folder_of(db)?.join("quarantine");
    let (Ok(folders), Some(name)) = (std::fs::read_dir(&quarantine), wal.file_name()) else {
        return Ok(None);
    };
    let size = std::fs::metadata(wal)?.len();
    let mut hash = None;
    for folder in folders.flatten() {
        let candidate = folder.path().join(name);
        if std::fs::metadata(&candidate).is_ok_and(|meta| meta.len() == size) {
            let wanted = match hash {
                Some(hash) => hash,
                None => *hash.insert(fsx::hash_file(wal)?),
            };
            if fsx::hash_file(&candidate)? == wanted {
                return Ok(Some(candidate));
            }
        }
    }
    Ok(None)
}

/// Moves the `.wal` beside `db` into a new folder of `quarantine/`, under a
/// write lock on the database so that nobody opens it meanwhile. Returns
/// the folder.
pub fn quarantine(db: &Path, env: &str) -> Result<PathBuf> {
    let _guard = crate::db::swap::hold(db)?;
    let wal = path_of(db);
    let folder = crate::db::swap::new_shelf_folder(db, env, crate::db::swap::Shelf::Quarantine)?;
    let kept = folder.join(wal.file_name().unwrap_or_else(|| "data.wal".as_ref()));
    fsx::rename_synced(&wal, &kept)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make `{}` private", kept.display()))?;
    Ok(folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(iteration: u64, id: u8) -> Header {
        Header {
            version_number: 999,
            block_count: 1,
            block_alloc_size: 262_144,
            encrypted: false,
            free_list: u64::MAX,
            iteration,
            bad_headers: Vec::new(),
            db_identifier: [id; 16],
        }
    }

    /// A `.wal` as DuckDB writes it: the version entry, then framed entries.
    fn wal(id: u8, iteration: u8, payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = vec![0x64, 0, 98, 0x65, 0, 2, 0x66, 0, 16];
        bytes.extend([id; 16]);
        bytes.extend([0x67, 0, iteration, 0xFF, 0xFF]);
        for payload in payloads {
            bytes.extend((payload.len() as u64).to_le_bytes());
            bytes.extend(blocks::checksum(payload).to_le_bytes());
            bytes.extend(*payload);
        }
        bytes
    }

    fn verdict(bytes: &[u8], header: &Header) -> Option<String> {
        let mut cursor = std::io::Cursor::new(bytes.to_vec());
        judge(&mut cursor, bytes.len() as u64, header).unwrap()
    }

    #[test]
    fn a_whole_wal_and_a_torn_tail_replay() {
        let entries: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100 + i as usize]).collect();
        let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        let bytes = wal(7, 3, &refs);
        assert_eq!(verdict(&bytes, &header(3, 7)), None);
        assert_eq!(verdict(&bytes[..bytes.len() - 10], &header(3, 7)), None);
        // The last entry garbled in place, as a torn write leaves it.
        let mut garbled = bytes.clone();
        let last = garbled.len() - 20;
        garbled[last] ^= 1;
        assert_eq!(verdict(&garbled, &header(3, 7)), None);
        // Zeros where the last entries should be.
        let mut zeros = bytes.clone();
        zeros.extend([0u8; 600]);
        assert_eq!(verdict(&zeros, &header(3, 7)), None);
    }

    #[test]
    fn damage_before_the_end_another_database_or_garbage_do_not() {
        let entries: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100]).collect();
        let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        let bytes = wal(7, 3, &refs);
        let mut damaged = bytes.clone();
        damaged[30 + 16 + 50] ^= 0x10;
        assert!(
            verdict(&damaged, &header(3, 7))
                .unwrap()
                .contains("stops at byte")
        );
        assert!(
            verdict(&bytes, &header(3, 8))
                .unwrap()
                .contains("another database")
        );
        assert!(
            verdict(&bytes, &header(9, 7))
                .unwrap()
                .contains("checkpoint")
        );
        // One checkpoint behind is what DuckDB itself expects after a crash
        // between its checkpoint and the truncation of the .wal.
        assert_eq!(verdict(&bytes, &header(4, 7)), None);
        let garbage: Vec<u8> = (0..999u32).map(|i| (i * 7 % 256) as u8).collect();
        assert!(verdict(&garbage, &header(3, 7)).unwrap().contains("header"));
        assert_eq!(verdict(&[0u8; 64], &header(3, 7)), None);
        // A newer DuckDB's field in the version entry: left to DuckDB.
        let mut newer = vec![0x64, 0, 98, 0x65, 0, 2, 0x70, 0, 1, 0xFF, 0xFF];
        newer.extend(&bytes[30..]);
        assert_eq!(verdict(&newer, &header(3, 7)), None);
    }
}
