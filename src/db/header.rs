//! Reading a DuckDB file's header without DuckDB.
//!
//! The header says whether a file is a DuckDB database at all, whether it is
//! shorter than its own block count says (truncated), and which storage
//! version it is written in. The storage version matters because the app may
//! run an older DuckDB than ours: a file we write must stay readable by it,
//! and the file being replaced may be too damaged for DuckDB to open.
//!
//! Layout (DuckDB `storage_info.hpp`): a main header at 0 (checksum, `DUCK`,
//! version number), then two database headers at 4096 and 8192, the newer of
//! which (higher iteration) is in force; blocks start at 12288.

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

const MAGIC: &[u8; 4] = b"DUCK";
const HEADER_SIZE: u64 = 4096;
/// Where the first data block starts: the main header and two database headers.
pub const BLOCKS_START: u64 = 3 * HEADER_SIZE;
const DEFAULT_BLOCK_ALLOC_SIZE: u64 = 262_144;
/// The first of the main header's flags (`MainHeader::ENCRYPTED_DATABASE_FLAG`).
const ENCRYPTED_FLAG: u64 = 1;
/// Where the main header keeps the database's identifier: after the
/// checksum, magic, version, four flags and two 32-byte version strings
/// (and 8 bytes of encryption metadata).
const DB_IDENTIFIER: usize = 124;

/// Storage versions upkeep can write, as `ATTACH ... (STORAGE_VERSION ..)`
/// names them, with the version number DuckDB puts in the main header for
/// each. Several names share a number; the first of each is used when
/// reading a header back.
const STORAGE_VERSIONS: &[(&str, u64)] = &[
    ("v1.0.0", 64),
    ("v0.10.0", 64),
    ("v0.10.1", 64),
    ("v0.10.2", 64),
    ("v0.10.3", 64),
    ("v1.1.0", 64),
    ("v1.1.1", 64),
    ("v1.1.2", 64),
    ("v1.1.3", 64),
    ("v1.2.0", 65),
    ("v1.2.1", 65),
    ("v1.2.2", 65),
    ("v1.3.0", 66),
    ("v1.3.1", 66),
    ("v1.3.2", 66),
    ("v1.4.0", 67),
    ("v1.4.1", 67),
    ("v1.4.2", 67),
    ("v1.4.3", 67),
    ("v1.4.4", 67),
    ("v1.5.0", 68),
    ("v2.0.0", 999),
];

/// The storage version to write a database file in, e.g. `v1.1.0`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct StorageVersion(String);

impl StorageVersion {
    /// The oldest format DuckDB 2.0 writes, readable by every DuckDB since
    /// 0.10: the safe choice when nothing says what the app runs.
    pub fn most_compatible() -> StorageVersion {
        StorageVersion("v1.0.0".to_string())
    }

    /// The storage version a header's version number stands for.
    pub fn from_number(number: u64) -> Option<StorageVersion> {
        STORAGE_VERSIONS
            .iter()
            .find(|(_, known)| *known == number)
            .map(|(name, _)| StorageVersion(name.to_string()))
    }

    pub fn number(&self) -> u64 {
        STORAGE_VERSIONS
            .iter()
            .find(|(name, _)| *name == self.0)
            .map_or(0, |(_, number)| *number)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StorageVersion {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        if STORAGE_VERSIONS.iter().any(|(known, _)| *known == name) {
            Ok(StorageVersion(name))
        } else {
            Err(format!(
                "unknown storage version `{name}`: expected one of {}",
                STORAGE_VERSIONS
                    .iter()
                    .map(|(known, _)| *known)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
}

impl fmt::Display for StorageVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the header of a sound-looking DuckDB file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The main header's version number (64 for v1.0 to v1.1, 999 for v2.0).
    pub version_number: u64,
    /// Blocks in the file, and the size of each (with its 8-byte checksum).
    pub block_count: u64,
    pub block_alloc_size: u64,
    /// Encrypted blocks carry their checksum elsewhere.
    pub encrypted: bool,
    /// Where the free list starts: a metadata pointer (the block id in the
    /// low 56 bits, the index of the metadata sub-block in the high 8), or
    /// `u64::MAX` when no block is free.
    pub free_list: u64,
    /// The checkpoint iteration of the header in force.
    pub iteration: u64,
    /// Offsets of header blocks (0, 4096, 8192) whose checksum fails:
    /// DuckDB refuses to open such a file.
    pub bad_headers: Vec<u64>,
    /// The database's identifier (main header), which its `.wal` repeats.
    pub db_identifier: [u8; 16],
}

impl Header {
    /// The storage version, when it is one upkeep knows.
    pub fn storage_version(&self) -> Option<StorageVersion> {
        StorageVersion::from_number(self.version_number)
    }
}

/// Why a file is not a readable DuckDB database, as far as the header tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    Empty,
    NotDuckdb { looks_like: Option<&'static str> },
    Truncated { size: u64, expected: u64 },
}

impl fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderProblem::Empty => write!(f, "the file is empty (0 bytes)"),
            HeaderProblem::NotDuckdb {
                looks_like: Some(kind),
            } => write!(f, "not a DuckDB file: it looks like {kind}"),
            HeaderProblem::NotDuckdb { looks_like: None } => {
                write!(f, "not a DuckDB file: no `DUCK` magic bytes in its header")
            }
            HeaderProblem::Truncated { size, expected } => write!(
                f,
                "truncated: the file has {size} bytes, its header says at least {expected}"
            ),
        }
    }
}

/// Reads and checks the header of `path`. I/O errors (missing file, no
/// permission) come back as the outer error.
pub fn read(path: &Path) -> std::io::Result<Result<Header, HeaderProblem>> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut bytes = Vec::with_capacity(BLOCKS_START as usize);
    file.by_ref().take(BLOCKS_START).read_to_end(&mut bytes)?;
    Ok(parse(&bytes, size))
}

/// Parses the first [`BLOCKS_START`] bytes of a file of `size` bytes.
pub fn parse(bytes: &[u8], size: u64) -> Result<Header, HeaderProblem> {
    if size == 0 {
        return Err(HeaderProblem::Empty);
    }
    if bytes.len() < 20 || &bytes[8..12] != MAGIC {
        return Err(HeaderProblem::NotDuckdb {
            looks_like: guess_format(bytes),
        });
    }
    let version_number = u64_at(bytes, 12);
    if size < BLOCKS_START {
        return Err(HeaderProblem::Truncated {
            size,
            expected: BLOCKS_START,
        });
    }
    let bad_headers: Vec<u64> = [0, HEADER_SIZE, 2 * HEADER_SIZE]
        .into_iter()
        .filter(|&offset| {
            let block = bytes.get(offset as usize..(offset + HEADER_SIZE) as usize);
            !block.is_some_and(crate::db::blocks::block_ok)
        })
        .collect();
    // The database header with the higher iteration is the one in force
    // (of those whose checksum holds, when one does not).
    let active = [HEADER_SIZE, 2 * HEADER_SIZE]
        .into_iter()
        .filter(|offset| bad_headers.len() == 3 || !bad_headers.contains(offset))
        .max_by_key(|&offset| u64_at(bytes, offset as usize + 8))
        .unwrap_or(HEADER_SIZE) as usize;
    let block_count = u64_at(bytes, active + 32);
    let block_alloc_size = match u64_at(bytes, active + 40) {
        0 => DEFAULT_BLOCK_ALLOC_SIZE,
        block_size => block_size,
    };
    // The header's block count cannot tell a truncated file: DuckDB itself
    // cuts free blocks off the end of the file without lowering it. Which
    // blocks are in use is for DuckDB's catalog to say (see `check`).
    Ok(Header {
        version_number,
        block_count,
        block_alloc_size,
        encrypted: u64_at(bytes, 20) & ENCRYPTED_FLAG != 0,
        free_list: u64_at(bytes, active + 24),
        iteration: u64_at(bytes, active + 8),
        bad_headers,
        db_identifier: bytes
            .get(DB_IDENTIFIER..DB_IDENTIFIER + 16)
            .and_then(|slice| slice.try_into().ok())
            .unwrap_or([0; 16]),
    })
}

pub(crate) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    bytes.get(offset..offset + 8).map_or(0, |slice| {
        u64::from_le_bytes(slice.try_into().unwrap_or([0; 8]))
    })
}

fn guess_format(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"SQLite format 3\0") {
        Some("an SQLite database")
    } else if bytes.starts_with(b"PAR1") {
        Some("a Parquet file")
    } else if bytes.starts_with(b"\x1f\x8b") {
        Some("a gzip archive")
    } else if bytes.starts_with(b"PK\x03\x04") {
        Some("a zip archive")
    } else if !bytes.is_empty() && bytes.iter().take(512).all(|b| b.is_ascii()) {
        Some("a text file")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u64, block_count: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; BLOCKS_START as usize];
        bytes[8..12].copy_from_slice(MAGIC);
        bytes[12..20].copy_from_slice(&version.to_le_bytes());
        let active = 2 * HEADER_SIZE as usize;
        bytes[active + 8..active + 16].copy_from_slice(&3u64.to_le_bytes());
        bytes[active + 32..active + 40].copy_from_slice(&block_count.to_le_bytes());
        bytes[active + 40..active + 48].copy_from_slice(&4096u64.to_le_bytes());
        bytes
    }

    #[test]
    fn reads_version_and_blocks_from_the_newest_header() {
        let bytes = header(64, 2);
        let parsed = parse(&bytes, BLOCKS_START + 8192).unwrap();
        assert_eq!((parsed.block_count, parsed.block_alloc_size), (2, 4096));
        assert_eq!(parsed.storage_version().unwrap().as_str(), "v1.0.0");
    }

    #[test]
    fn a_file_shorter_than_its_headers_is_truncated() {
        let bytes = header(999, 2);
        assert_eq!(
            parse(&bytes[..5000], 5000),
            Err(HeaderProblem::Truncated {
                size: 5000,
                expected: BLOCKS_START
            })
        );
    }

    #[test]
    fn other_formats_are_named() {
        let sqlite = b"SQLite format 3\0 and then some".to_vec();
        assert_eq!(
            parse(&sqlite, 4096),
            Err(HeaderProblem::NotDuckdb {
                looks_like: Some("an SQLite database")
            })
        );
        assert_eq!(parse(&[], 0), Err(HeaderProblem::Empty));
    }
}
