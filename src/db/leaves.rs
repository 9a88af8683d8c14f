//! The blake3 of a file kept as the chaining values of its 64 KiB leaves,
//! so that it is known again after a few ranges change without reading
//! the whole file: an update's restore point topped up
//! ([`crate::db::topup`]), a replicator's next point
//! ([`crate::offsite::replicate`]).

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

/// The blake3 tree is kept at this grain: a power of two of blake3's
/// 1 KiB chunks, so that each leaf is a subtree of the tree.
const LEAF: u64 = 64 << 10;

/// The chaining values of a file's 64 KiB leaves: its blake3 without
/// reading it all again when a few ranges change.
pub struct Leaves {
    cvs: Vec<ChainingValue>,
    size: u64,
}

impl Leaves {
    /// Reads `file` (of `size` bytes) whole.
    pub fn of(file: &File, size: u64) -> std::io::Result<Leaves> {
        let mut leaves = Leaves {
            cvs: Vec::new(),
            size: 0,
        };
        leaves.update(file, size, &[(0, size)])?;
        Ok(leaves)
    }

    /// `file` is now `size` bytes long, and the `(offset, length)` ranges
    /// changed: hashes their leaves again, and the last one.
    pub fn update(&mut self, file: &File, size: u64, ranges: &[(u64, u64)]) -> std::io::Result<()> {
        let count = size.div_ceil(LEAF);
        let before = self.size.div_ceil(LEAF);
        self.cvs.resize(count as usize, [0; 32]);
        let mut todo: BTreeSet<u64> = ranges
            .iter()
            .filter(|(_, len)| *len > 0)
            .flat_map(|(offset, len)| offset / LEAF..=(offset + len - 1) / LEAF)
            .collect();
        if size != self.size {
            // The old last leaf and the new ones, or the new last one.
            todo.extend(before.saturating_sub(1)..count);
            todo.insert(count.saturating_sub(1));
        }
        let mut bytes = vec![0u8; LEAF as usize];
        for leaf in todo.into_iter().filter(|leaf| *leaf < count) {
            let offset = leaf * LEAF;
            let len = LEAF.min(size - offset) as usize;
            file.read_exact_at(&mut bytes[..len], offset)?;
            self.cvs[leaf as usize] = blake3::Hasher::new()
                .set_input_offset(offset)
                .update(&bytes[..len])
                .finalize_non_root();
        }
        self.size = size;
        Ok(())
    }

    /// The blake3 of the whole file; `None` for a file of one leaf or
    /// less (a tree of one node has no chaining values to merge).
    pub fn root(&self) -> Option<blake3::Hash> {
        if self.size <= LEAF {
            return None;
        }
        let left = left_subtree_len(self.size);
        Some(merge_subtrees_root(
            &self.subtree(0, left),
            &self.subtree(left, self.size - left),
            Mode::Hash,
        ))
    }

    /// The chaining value of the subtree of `len` bytes at `start`.
    fn subtree(&self, start: u64, len: u64) -> ChainingValue {
        if len <= LEAF {
            return self.cvs[(start / LEAF) as usize];
        }
        let left = left_subtree_len(len);
        merge_subtrees_non_root(
            &self.subtree(start, left),
            &self.subtree(start + left, len - left),
            Mode::Hash,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
        let handle = file.reopen().unwrap();
        (file, handle)
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 10) as u8)
            .collect()
    }

    #[test]
    fn the_root_of_the_leaves_is_the_blake3_of_the_file() {
        let leaf = LEAF as usize;
        for len in [
            leaf + 1,
            2 * leaf,
            3 * leaf,
            3 * leaf + 5,
            7 * leaf - 1,
            (1 << 20) + 12288,
            5 * leaf + 1024,
        ] {
            let content = bytes(len, 7);
            let (_kept, file) = file_of(&content);
            let leaves = Leaves::of(&file, len as u64).unwrap();
            assert_eq!(leaves.root(), Some(blake3::hash(&content)), "{len} bytes");
        }
        let (_kept, file) = file_of(&bytes(leaf, 1));
        assert_eq!(Leaves::of(&file, LEAF).unwrap().root(), None);
    }

    #[test]
    fn after_changes_growth_and_shrinking_only_their_leaves_are_hashed_again() {
        let leaf = LEAF as usize;
        let mut content = bytes(10 * leaf + 300, 3);
        let (kept, file) = file_of(&content);
        let mut leaves = Leaves::of(&file, content.len() as u64).unwrap();
        let write = |content: &[u8]| std::fs::write(kept.path(), content).unwrap();
        // A range inside one leaf, one across two, and the headers.
        content[5 * leaf + 10..5 * leaf + 20].fill(0xAA);
        content[2 * leaf - 3..2 * leaf + 3].fill(0x55);
        content[..12288].fill(1);
        write(&content);
        let ranges = [(5 * LEAF + 10, 10), (2 * LEAF - 3, 6), (0, 12288)];
        leaves.update(&file, content.len() as u64, &ranges).unwrap();
        assert_eq!(leaves.root(), Some(blake3::hash(&content)));
        // Grown by a block and a half.
        content.extend(bytes(leaf + leaf / 2, 9));
        write(&content);
        leaves.update(&file, content.len() as u64, &[]).unwrap();
        assert_eq!(leaves.root(), Some(blake3::hash(&content)));
        // Shrunk to less than it was at first.
        content.truncate(4 * leaf + 7);
        write(&content);
        leaves.update(&file, content.len() as u64, &[]).unwrap();
        assert_eq!(leaves.root(), Some(blake3::hash(&content)));
        // A change the leaves are not told of is not seen: the caller must
        // name every range it writes.
        content[3 * leaf] ^= 1;
        write(&content);
        leaves.update(&file, content.len() as u64, &[]).unwrap();
        assert_ne!(leaves.root(), Some(blake3::hash(&content)));
    }
}
