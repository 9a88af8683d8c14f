//! Packs: how the blocks of continuous copies' points are stored off-site
//! (see the continuous copies issue; not yet used by a command).
//!
//! A block is named by the blake3 of its bytes keyed with the store's
//! naming key ([`name`]): equal blocks are stored once, and the names tell
//! the store nothing about the contents without the key. Blocks are packed
//! into objects of at most [`PACK_LIMIT`], each sent as one PUT. With
//! `encrypt_to`, each block is sealed on its own as an age file, so that one
//! ranged GET fetches one block and the `age` tool decrypts a block cut out
//! of a pack. Each block's place in its pack comes with the blake3 of its
//! stored bytes, so a pack can be checked without the key.

use std::collections::HashSet;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::offsite::crypt::{Identities, Recipients};

/// The most a pack holds.
pub const PACK_LIMIT: u64 = 64 << 20;

/// A block's name: the blake3 of its bytes keyed with the naming key.
pub fn name(key: &[u8; 32], plain: &[u8]) -> String {
    blake3::keyed_hash(key, plain).to_hex().to_string()
}

/// Where a block lies in its pack, as it is stored there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Its name (see [`name`]).
    pub name: String,
    pub offset: u64,
    /// Bytes in the pack: sealed, when the pack is encrypted.
    pub len: u64,
    /// Bytes of the block itself.
    pub plain_len: u64,
    /// The blake3 of its bytes in the pack.
    pub blake3: String,
}

/// A pack being filled.
#[derive(Default)]
pub struct Pack {
    bytes: Vec<u8>,
    blocks: Vec<Stored>,
    names: HashSet<String>,
}

impl Pack {
    /// Adds `plain` as the block `name`, sealed to `recipients` when given.
    /// False, and nothing added, when the pack would go over
    /// [`PACK_LIMIT`]: send it, then add the block to a new one. A block
    /// alone is always taken.
    pub fn add(
        &mut self,
        name: String,
        plain: &[u8],
        recipients: Option<&Recipients>,
    ) -> Result<bool> {
        let stored = match recipients {
            Some(recipients) => recipients.seal(plain)?,
            None => plain.to_vec(),
        };
        let offset = self.bytes.len() as u64;
        if offset > 0 && offset + stored.len() as u64 > PACK_LIMIT {
            return Ok(false);
        }
        self.names.insert(name.clone());
        self.blocks.push(Stored {
            name,
            offset,
            len: stored.len() as u64,
            plain_len: plain.len() as u64,
            blake3: blake3::hash(&stored).to_hex().to_string(),
        });
        self.bytes.extend_from_slice(&stored);
        Ok(true)
    }

    /// Whether the block `name` is in the pack already.
    pub fn holds(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The pack's bytes, and where each block lies in them.
    pub fn finish(self) -> (Vec<u8>, Vec<Stored>) {
        (self.bytes, self.blocks)
    }
}

/// The block `block` of pack `pack`, from its bytes `stored` (what a ranged
/// GET of it returns): checked against its stored hash, decrypted with
/// `identities` when the pack is sealed, then checked against its name.
pub fn open(
    pack: &str,
    block: &Stored,
    stored: &[u8],
    key: &[u8; 32],
    identities: Option<&Identities>,
) -> Result<Vec<u8>> {
    let at = || format!("block {} of pack `{pack}`", block.name);
    if stored.len() as u64 != block.len || blake3::hash(stored).to_hex().as_str() != block.blake3 {
        bail!(
            "{} is damaged: its bytes are not those stored ({} bytes read, {} expected); \
             restore from another point, and run `upkeep verify --offsite`",
            at(),
            stored.len(),
            block.len
        );
    }
    let plain = match identities {
        Some(identities) => identities.open(stored, &at())?,
        None => stored.to_vec(),
    };
    if plain.len() as u64 != block.plain_len || name(key, &plain) != block.name {
        bail!(
            "{} does not hold the block it is named for (wrong naming key or identity?)",
            at()
        );
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [9; 32];

    fn block(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 8) as u8)
            .collect()
    }

    fn slice<'a>(bytes: &'a [u8], block: &Stored) -> &'a [u8] {
        &bytes[block.offset as usize..(block.offset + block.len) as usize]
    }

    #[test]
    fn each_block_is_cut_out_of_its_pack_and_checked() {
        let blocks: Vec<Vec<u8>> = (1..=3)
            .map(|seed| block(seed, 1000 * seed as usize))
            .collect();
        let mut pack = Pack::default();
        for plain in &blocks {
            assert!(pack.add(name(&KEY, plain), plain, None).unwrap());
        }
        let (bytes, stored) = pack.finish();
        for (plain, block) in blocks.iter().zip(&stored) {
            assert_eq!(
                &open("p", block, slice(&bytes, block), &KEY, None).unwrap(),
                plain
            );
        }
        // A flipped byte, another naming key: refused, naming the block.
        let mut damaged = slice(&bytes, &stored[1]).to_vec();
        damaged[10] ^= 1;
        let error = open("p", &stored[1], &damaged, &KEY, None).unwrap_err();
        assert!(error.to_string().contains("is damaged"), "{error}");
        let error = open("p", &stored[1], slice(&bytes, &stored[1]), &[1; 32], None).unwrap_err();
        assert!(error.to_string().contains("not hold the block"), "{error}");
    }

    #[test]
    fn a_pack_stops_at_its_limit_but_always_takes_one_block() {
        let big = vec![7u8; (PACK_LIMIT / 2 + 1) as usize];
        let mut pack = Pack::default();
        assert!(pack.add(name(&KEY, &big), &big, None).unwrap());
        assert!(!pack.add(name(&KEY, &big), &big, None).unwrap());
        let (bytes, stored) = pack.finish();
        assert_eq!((bytes.len(), stored.len()), (big.len(), 1));
    }

    #[test]
    fn sealed_blocks_open_only_with_the_identity() {
        let identity = age::x25519::Identity::generate();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.txt");
        use age::secrecy::ExposeSecret;
        std::fs::write(&file, identity.to_string().expose_secret()).unwrap();
        let recipients = Recipients::load(&[identity.to_public().to_string()], dir.path()).unwrap();
        let identities = Identities::load(&file).unwrap();
        let plain = block(5, 256 << 10);
        let mut pack = Pack::default();
        assert!(
            pack.add(name(&KEY, &plain), &plain, Some(&recipients))
                .unwrap()
        );
        let (bytes, stored) = pack.finish();
        // Sealed: the plaintext is nowhere in the pack.
        assert!(!bytes.windows(64).any(|window| window == &plain[1000..1064]));
        let block = &stored[0];
        assert_eq!(
            open("p", block, slice(&bytes, block), &KEY, Some(&identities)).unwrap(),
            plain
        );
    }
}
