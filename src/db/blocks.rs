//! Reading a database file back in full, checking DuckDB's own checksum of
//! every block and hashing the bytes, in one pass at memory speed.
//!
//! This is how a new backup is verified: every byte of the copy is read back
//! from the file system, every block's checksum (the one DuckDB verifies when
//! it loads a block) must match, and the blake3 hash goes into the manifest.
//! It costs a fraction of a full DuckDB scan, which must decompress every
//! column, and it reads the blocks a scan never loads (indexes, metadata).
//! A block that does not match is damage unless the file's own free list
//! names it (see `layout`): only a free block may hold anything.
//!
//! The checksum is DuckDB's `Checksum()` (`common/checksum.cpp`): 5381, xor
//! of every little-endian u64 times 0xbf58476d1ce4e5b9, and a murmur-style
//! hash of the 0-7 trailing bytes; stored in the first 8 bytes of the block.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::db::header::{self, BLOCKS_START, Header};

const BLOCK_CHECKSUM_SIZE: usize = 8;
/// How many blocks are read at once.
const BATCH_BLOCKS: usize = 32;

/// What a full read of a database file found.
#[derive(Debug, Clone)]
pub struct ReadBack {
    pub hash: blake3::Hash,
    pub size: u64,
    /// Blocks whose checksum does not match (empty when `checked` is false).
    pub bad_blocks: Vec<u64>,
    /// False when the blocks could not be checked here (an encrypted file).
    pub checked: bool,
    /// The header as read at the start.
    pub header: Header,
}

/// Reads the file at `path` in full (through `file`, which may follow a
/// copy as it is written: see [`crate::fsx::Following`]), hashes every byte
/// and checks every block. `size` is the file's expected size, which the
/// header is checked against; [`ReadBack::size`] is what was read.
pub fn read_back(path: &Path, mut file: impl Read, size: u64) -> Result<ReadBack> {
    let mut head = vec![0u8; BLOCKS_START as usize];
    file.read_exact(&mut head)
        .with_context(|| format!("cannot read the header of `{}`", path.display()))?;
    let header = match header::parse(&head, size) {
        Ok(header) => header,
        Err(problem) => bail!("`{}`: {problem}", path.display()),
    };
    let mut hasher = blake3::Hasher::new();
    hasher.update(&head);
    // DuckDB's blocks are 16 to 256 KiB, a power of two; anything else is
    // not a header to trust: hash only, and let DuckDB judge the blocks.
    let plausible = plausible_block_size(header.block_alloc_size);
    let block = if plausible {
        header.block_alloc_size as usize
    } else {
        1 << 18
    };
    let mut buffer = vec![0u8; block * BATCH_BLOCKS];
    let mut bad_blocks = Vec::new();
    let mut checked = !header.encrypted && plausible;
    let mut next_block = 0u64;
    let mut read = BLOCKS_START;
    loop {
        let filled = fill(&mut file, &mut buffer)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        if filled == 0 {
            break;
        }
        read += filled as u64;
        let data = &buffer[..filled];
        // Hash on this thread, checksums on another: two cores, one pass.
        let checking = checked;
        std::thread::scope(|scope| {
            let checks = scope.spawn(|| {
                if !checking {
                    return Vec::new();
                }
                failing(&header, data, next_block)
            });
            hasher.update(data);
            match checks.join() {
                Ok(bad) => bad_blocks.extend(bad),
                // Never "no bad blocks" by accident: let DuckDB decide.
                Err(_) => checked = false,
            }
        });
        next_block += filled.div_ceil(block) as u64;
    }
    Ok(ReadBack {
        hash: hasher.finalize(),
        size: read,
        bad_blocks,
        checked,
        header,
    })
}

/// The blocks of `bytes` (block `first` and those after it) below the
/// header's block count that fail their checksum.
pub(crate) fn failing(header: &Header, bytes: &[u8], first: u64) -> Vec<u64> {
    bytes
        .chunks(header.block_alloc_size as usize)
        .zip(first..)
        .filter(|(bytes, id)| *id < header.block_count && !block_ok(bytes))
        .map(|(_, id)| id)
        .collect()
}

/// DuckDB's blocks are 16 to 256 KiB, a power of two (4 KiB and 1 MiB are
/// let through as well).
pub(crate) fn plausible_block_size(size: u64) -> bool {
    size.is_power_of_two() && (4096..=(1 << 20)).contains(&size)
}

/// Reads until `buffer` is full or the file ends; returns the bytes read.
fn fill(file: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

pub(crate) fn block_ok(block: &[u8]) -> bool {
    if block.len() <= BLOCK_CHECKSUM_SIZE {
        return false;
    }
    let (stored, data) = block.split_at(BLOCK_CHECKSUM_SIZE);
    let stored = u64::from_le_bytes(stored.try_into().unwrap_or_default());
    stored == checksum(data)
}

/// DuckDB's block checksum (also the `.wal`'s entry checksum).
pub(crate) fn checksum(data: &[u8]) -> u64 {
    let words = data.chunks_exact(8);
    let rest = words.remainder();
    let mut result = 5381u64;
    for word in words {
        let value = u64::from_le_bytes(word.try_into().unwrap_or_default());
        result ^= value.wrapping_mul(0xbf58476d1ce4e5b9);
    }
    if !rest.is_empty() {
        result ^= checksum_remainder(rest);
    }
    result
}

/// DuckDB's `ChecksumRemainder` for the 1-7 bytes after the last full word.
fn checksum_remainder(rest: &[u8]) -> u64 {
    const M: u64 = 0xc6a4a7935bd1e995;
    const SEED: u64 = 0xe17a1465;
    const R: u32 = 47;
    let mut h = SEED ^ (rest.len() as u64).wrapping_mul(M);
    for (i, byte) in rest.iter().enumerate().rev() {
        h ^= u64::from(*byte) << (8 * i);
    }
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The stored checksum (the first 8 bytes) of each whole block of `file`
/// below `end`, by block id; read on up to 4 threads, since these are as
/// many reads as blocks (16,384 at 4 GiB).
pub fn stored_checksums(file: &std::fs::File, block: u64, end: u64) -> std::io::Result<Vec<u64>> {
    let count = end.saturating_sub(BLOCKS_START) / block;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) as u64;
    let per_thread = count.div_ceil(threads).max(1);
    let read = |first: u64| -> std::io::Result<Vec<u64>> {
        let mut stored = [0u8; 8];
        (first..count.min(first + per_thread))
            .map(|id| {
                std::os::unix::fs::FileExt::read_exact_at(
                    file,
                    &mut stored,
                    BLOCKS_START + id * block,
                )?;
                Ok(u64::from_le_bytes(stored))
            })
            .collect()
    };
    std::thread::scope(|scope| {
        let parts: Vec<_> = (1..threads)
            .map(|part| scope.spawn(move || read(part * per_thread)))
            .collect();
        let mut checksums = read(0)?;
        for part in parts {
            let part = part
                .join()
                .map_err(|_| std::io::Error::other("a checksum reading thread panicked"))?;
            checksums.extend(part?);
        }
        Ok(checksums)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_whole(path: &std::path::Path) -> super::ReadBack {
        let size = std::fs::metadata(path).unwrap().len();
        read_back(path, std::fs::File::open(path).unwrap(), size).unwrap()
    }

    #[test]
    fn every_block_of_a_real_database_matches_and_a_damaged_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("real.duckdb");
        let conn = duckdb::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE t AS SELECT i, md5(i::VARCHAR) AS s FROM range(300000) r(i); CHECKPOINT;",
        )
        .unwrap();
        drop(conn);
        let sound = read_whole(&path);
        assert!(sound.checked);
        assert!(sound.bad_blocks.is_empty(), "{:?}", sound.bad_blocks);
        assert_eq!(sound.hash, blake3::hash(&std::fs::read(&path).unwrap()));

        let mut bytes = std::fs::read(&path).unwrap();
        bytes[BLOCKS_START as usize + 262_144 + 5_000] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_whole(&path).bad_blocks, vec![1]);
    }

    #[test]
    fn a_block_with_its_own_checksum_passes_and_a_flipped_byte_fails() {
        let mut block = vec![0u8; 4096];
        for (i, byte) in block.iter_mut().enumerate().skip(8) {
            *byte = (i * 31 % 251) as u8;
        }
        let sum = checksum(&block[8..]);
        block[..8].copy_from_slice(&sum.to_le_bytes());
        assert!(block_ok(&block));
        block[100] ^= 1;
        assert!(!block_ok(&block));
    }

    #[test]
    fn the_remainder_follows_duckdb() {
        // Hand-computed from DuckDB's ChecksumRemainder for the bytes [1, 2, 3].
        let mut h: u64 = 0xe17a1465 ^ 3u64.wrapping_mul(0xc6a4a7935bd1e995);
        h ^= 3 << 16;
        h ^= 2 << 8;
        h ^= 1;
        h = h.wrapping_mul(0xc6a4a7935bd1e995);
        h ^= h >> 47;
        h = h.wrapping_mul(0xc6a4a7935bd1e995);
        h ^= h >> 47;
        assert_eq!(checksum_remainder(&[1, 2, 3]), h);
    }
}
