//! Which blocks of a database file are in use, read from the file itself.
//!
//! A block whose checksum does not match is damage, unless it is free: only
//! blocks on DuckDB's free list may hold anything. The free list is read
//! here, without DuckDB, from the file's own metadata, so that a file DuckDB
//! cannot open is judged too, and so that nothing is excused on a guess: a
//! block counts as in use unless the free list, itself read from blocks
//! whose checksum holds, names it.
//!
//! Layout (DuckDB `single_file_block_manager.cpp`, `metadata_reader.cpp`):
//! the header in force points at the free list's first metadata sub-block.
//! A metadata pointer holds a block id in its low 56 bits and the index of
//! one of the block's 64 sub-blocks in its high 8. Each sub-block starts
//! with the pointer to the next (`u64::MAX` at the end), then data. The
//! free list is a count and that many block ids (then the multi-use blocks
//! and the metadata blocks, which are in use).

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::FileExt;

use crate::db::blocks;
use crate::db::header::{BLOCKS_START, Header};

/// Sub-blocks in a metadata block.
const METADATA_BLOCK_COUNT: u64 = 64;
/// The checksum in front of every block.
const BLOCK_HEADER_SIZE: u64 = 8;
/// No pointer (`DConstants::INVALID_INDEX`).
const INVALID: u64 = u64::MAX;

/// What a file's blocks say about damage.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Header blocks (by offset) whose checksum fails.
    pub headers: Vec<u64>,
    /// Blocks in use whose checksum fails.
    pub blocks: Vec<u64>,
    /// Blocks in use that lie past the end of the file: the first, and how
    /// many.
    pub missing: Option<(u64, u64)>,
    /// Why the free list could not be read, when it could not: then no
    /// block is excused.
    pub free_list: Option<String>,
}

impl Damage {
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
            && self.blocks.is_empty()
            && self.missing.is_none()
            && self.free_list.is_none()
    }

    /// One sentence per kind of damage found.
    pub fn checksum_messages(&self, header: &Header) -> Vec<String> {
        let mut messages = Vec::new();
        if !self.headers.is_empty() {
            messages.push(format!(
                "the file's header fails its checksum (at byte {})",
                list(&self.headers)
            ));
        }
        if !self.blocks.is_empty() {
            messages.push(format!(
                "{} block(s) in use fail DuckDB's checksum: block id(s) {} (block size {} bytes, first block at byte {})",
                self.blocks.len(),
                list(&self.blocks),
                header.block_alloc_size,
                BLOCKS_START
            ));
        }
        if let Some(problem) = &self.free_list {
            messages.push(format!("the free list cannot be read: {problem}"));
        }
        messages
    }

    pub fn truncation_message(&self, size: u64, header: &Header) -> Option<String> {
        let (first, count) = self.missing?;
        let needed = end_of(first, header.block_alloc_size);
        Some(format!(
            "truncated: the file has {size} bytes, but block {first} in use ends at {needed} ({count} block(s) in use are missing)"
        ))
    }
}

/// The first few numbers of a list, for a message.
fn list(numbers: &[u64]) -> String {
    let mut text: Vec<String> = numbers.iter().take(10).map(u64::to_string).collect();
    if numbers.len() > 10 {
        text.push(format!("and {} more", numbers.len() - 10));
    }
    text.join(", ")
}

fn end_of(block: u64, block_alloc_size: u64) -> u64 {
    block
        .saturating_add(1)
        .saturating_mul(block_alloc_size)
        .saturating_add(BLOCKS_START)
}

/// Judges the file behind `file` (of `size` bytes, with `header`), given
/// the blocks whose checksum failed in a full read (`bad_blocks`; empty
/// when only the length is to be judged).
pub fn damage(file: &std::fs::File, header: &Header, size: u64, bad_blocks: &[u64]) -> Damage {
    let mut damage = Damage {
        headers: header.bad_headers.clone(),
        ..Damage::default()
    };
    if header.encrypted {
        // Blocks, database headers and the free list are encrypted: DuckDB
        // judges them (with the key).
        damage.headers.retain(|&offset| offset == 0);
        return damage;
    }
    let free = match free_blocks(file, header, size) {
        Ok(free) => free,
        Err(problem) => {
            damage.free_list = Some(problem);
            BTreeSet::new()
        }
    };
    damage.blocks = bad_blocks
        .iter()
        .copied()
        .filter(|block| !free.contains(block))
        .collect();
    damage.missing = missing(header, size, &free);
    // A free list that could not be read because its own block is cut off
    // or damaged is said once, as that block.
    if damage.free_list.is_some() && (damage.missing.is_some() || !damage.blocks.is_empty()) {
        damage.free_list = None;
    }
    damage
}

/// The blocks in use (below the header's block count, not free) that end
/// past `size`: the first of them and how many.
fn missing(header: &Header, size: u64, free: &BTreeSet<u64>) -> Option<(u64, u64)> {
    let alloc = header.block_alloc_size.max(1);
    let whole_blocks = size.saturating_sub(BLOCKS_START) / alloc;
    if whole_blocks >= header.block_count {
        return None;
    }
    let tail = header.block_count - whole_blocks;
    let free_in_tail = free.range(whole_blocks..header.block_count).count() as u64;
    let count = tail.saturating_sub(free_in_tail);
    if count == 0 {
        return None;
    }
    // The first block of the tail that the free list does not name.
    let first = (whole_blocks..header.block_count)
        .zip(0..=free_in_tail)
        .map(|(block, _)| block)
        .find(|block| !free.contains(block))?;
    Some((first, count))
}

/// The free list of the file, read from its metadata. An error says why it
/// cannot be trusted.
pub fn free_blocks(
    file: &std::fs::File,
    header: &Header,
    size: u64,
) -> Result<BTreeSet<u64>, String> {
    if header.free_list == INVALID {
        return Ok(BTreeSet::new());
    }
    if !blocks::plausible_block_size(header.block_alloc_size) {
        return Err(format!(
            "the header's block size ({} bytes) is not one DuckDB writes",
            header.block_alloc_size
        ));
    }
    let mut reader = MetadataReader {
        file,
        header,
        size,
        sub_block_size: metadata_sub_block_size(header.block_alloc_size),
        loaded: HashMap::new(),
        data: Vec::new(),
        position: 0,
        next: header.free_list,
        visited: 0,
    };
    let count = reader.read_u64()?;
    if count > header.block_count {
        return Err(format!(
            "it claims {count} free blocks, more than the file's {}",
            header.block_count
        ));
    }
    let mut free = BTreeSet::new();
    for _ in 0..count {
        free.insert(reader.read_u64()?);
    }
    Ok(free)
}

/// DuckDB's `MetadataManager::GetMetadataBlockSize`: a 64th of the usable
/// block, rounded down to 8 bytes.
fn metadata_sub_block_size(block_alloc_size: u64) -> u64 {
    (block_alloc_size.saturating_sub(BLOCK_HEADER_SIZE) / METADATA_BLOCK_COUNT) & !7
}

/// Reads a chain of metadata sub-blocks as one stream.
struct MetadataReader<'a> {
    file: &'a std::fs::File,
    header: &'a Header,
    size: u64,
    sub_block_size: u64,
    /// Whole metadata blocks read so far, checksum checked.
    loaded: HashMap<u64, Vec<u8>>,
    /// The data of the current sub-block, and how far it has been read.
    data: Vec<u8>,
    position: usize,
    next: u64,
    visited: u64,
}

impl MetadataReader<'_> {
    fn read_u64(&mut self) -> Result<u64, String> {
        let mut bytes = [0u8; 8];
        let mut filled = 0;
        while filled < 8 {
            if self.position == self.data.len() {
                self.load_next()?;
            }
            let take = (8 - filled).min(self.data.len() - self.position);
            bytes[filled..filled + take]
                .copy_from_slice(&self.data[self.position..self.position + take]);
            filled += take;
            self.position += take;
        }
        Ok(u64::from_le_bytes(bytes))
    }

    fn load_next(&mut self) -> Result<(), String> {
        let pointer = self.next;
        if pointer == INVALID {
            return Err("it ends before its last entry".to_string());
        }
        self.visited += 1;
        if self.visited > self.header.block_count.saturating_mul(METADATA_BLOCK_COUNT) {
            return Err("its chain of metadata blocks loops".to_string());
        }
        let block = pointer & ((1 << 56) - 1);
        let index = pointer >> 56;
        if index >= METADATA_BLOCK_COUNT || block >= self.header.block_count {
            return Err(format!(
                "it points at metadata block {block} sub-block {index}, outside the file's {} blocks",
                self.header.block_count
            ));
        }
        if !self.loaded.contains_key(&block) {
            let bytes = self.read_block(block)?;
            self.loaded.insert(block, bytes);
        }
        let whole = &self.loaded[&block];
        let start = (BLOCK_HEADER_SIZE + index * self.sub_block_size) as usize;
        let end = start + self.sub_block_size as usize;
        let sub_block = whole
            .get(start..end)
            .ok_or_else(|| format!("metadata block {block} is too short"))?;
        self.next = header_u64(sub_block);
        self.data = sub_block[8..].to_vec();
        self.position = 0;
        Ok(())
    }

    fn read_block(&self, block: u64) -> Result<Vec<u8>, String> {
        let alloc = self.header.block_alloc_size;
        let offset = BLOCKS_START + block * alloc;
        if offset + alloc > self.size {
            return Err(format!(
                "its metadata block {block} lies past the end of the file"
            ));
        }
        let mut bytes = vec![0u8; alloc as usize];
        self.file
            .read_exact_at(&mut bytes, offset)
            .map_err(|error| format!("cannot read metadata block {block}: {error}"))?;
        if !blocks::block_ok(&bytes) {
            return Err(format!("its metadata block {block} fails its checksum"));
        }
        Ok(bytes)
    }
}

fn header_u64(bytes: &[u8]) -> u64 {
    crate::db::header::u64_at(bytes, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(block_count: u64) -> Header {
        Header {
            version_number: 999,
            block_count,
            block_alloc_size: 262_144,
            encrypted: false,
            free_list: INVALID,
            iteration: 1,
            bad_headers: Vec::new(),
            db_identifier: [0; 16],
        }
    }

    #[test]
    fn a_sub_block_is_a_64th_of_the_usable_block_rounded_down_to_words() {
        assert_eq!(metadata_sub_block_size(262_144), 4088);
        assert_eq!(metadata_sub_block_size(16_384), 248);
    }

    #[test]
    fn only_blocks_in_use_past_the_end_are_missing() {
        let header = header(10);
        let size_of = |blocks: u64| BLOCKS_START + blocks * 262_144;
        let free: BTreeSet<u64> = [7, 8, 9].into();
        // Free blocks trimmed off the end: nothing missing.
        assert_eq!(missing(&header, size_of(7), &free), None);
        // Cut inside block 6, which is in use.
        assert_eq!(missing(&header, size_of(6) + 100, &free), Some((6, 1)));
        // Cut before block 3: 3, 4, 5 and 6 are missing.
        assert_eq!(missing(&header, size_of(3), &free), Some((3, 4)));
        let gaps: BTreeSet<u64> = [3, 4, 5, 9].into();
        assert_eq!(missing(&header, size_of(3), &gaps), Some((6, 3)));
        assert_eq!(missing(&header, size_of(10), &BTreeSet::new()), None);
    }
}
