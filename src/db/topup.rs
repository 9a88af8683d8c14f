//! An update's restore point whose cost while the app is down does not grow
//! with the database.
//!
//! Before the app stops, [`prepare`] takes a live copy of its database
//! ([`crate::db::live`]) into a temporary folder of the backups folder and
//! reads it once: the blocks that fail their checksum (free ones only, or
//! the copy is refused), each block's stored checksum, and the blake3 tree
//! of the copy, kept as the chaining values of its 64 KiB leaves.
//!
//! Once the app is down and has let go of the file, [`top_up`] adds what
//! changed since: the three headers, and every block whose stored checksum
//! differs from the copy's (DuckDB writes a block's checksum with every
//! write of it), failed its checksum in the copy, or lies past the copy's
//! end; the copy takes the file's length. Only those blocks are read, each
//! one checked as it is copied. The blake3 of the whole file comes from the
//! kept leaves, with only the leaves of the copied bytes hashed again. Then
//! the copy is verified and published like every backup (every block in
//! use must verify: the unchanged ones did in the copy, the copied ones as
//! they were copied; DuckDB opens it and checks it; the manifest), and the
//! sync writes only what changed. Anything unexpected (a `.wal` left by an
//! app that did not close cleanly, another block size) is an error, and the
//! caller makes a whole backup instead.
//!
//! An update's integrity check runs [`check`] instead of opening the
//! database: it tops the copy up and checks the copy, which is then byte for
//! byte the database. [`top_up`] publishes that copy without checking it
//! again while the database's headers stay those it was checked at.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::db::Env;
use crate::db::backup::{self, Copy, Live, Made, Taken};
use crate::db::blocks::{self, ReadBack};
use crate::db::catalog::Schema;
use crate::db::check;
use crate::db::header::{self, BLOCKS_START};
use crate::db::retention::Rotation;

/// The blake3 tree is kept at this grain: a power of two of blake3's
/// 1 KiB chunks, so that each leaf is a subtree of the tree.
const LEAF: u64 = 64 << 10;

/// A live copy of a running app's database, read once, ready to be topped
/// up once the app is down.
pub struct Prepared {
    /// The environment it is a copy of.
    pub env: String,
    copy: Copy,
    live: Live,
    /// The copy as it stands: its size, header and failing blocks.
    read: ReadBack,
    /// Each whole block's stored checksum (its first 8 bytes), by block id.
    checksums: Vec<u64>,
    leaves: Leaves,
    /// Blocks and bytes copied by the top-ups so far.
    blocks: u64,
    bytes: u64,
    /// The check of the copy just topped up (see [`check`]), and the
    /// database's headers it was topped up to.
    checked: Option<(check::Report, Vec<u8>)>,
}

/// Takes the live copy of `env`'s database (held by its app) into `dir`
/// and reads it once (see the module docs). A copy whose blocks in use do
/// not all verify is refused.
pub fn prepare(env: &Env, dir: &Path) -> Result<Prepared> {
    let (copy, live) = backup::live_copy(env, dir)?;
    let read = match &copy.read_back {
        Ok(read) => read.clone(),
        Err(error) => bail!("the live copy cannot be read: {error:#}"),
    };
    let file = copy.partial.as_file();
    let damage = crate::db::layout::damage(file, &read.header, read.size, &read.bad_blocks);
    if !damage.checksum_messages(&read.header).is_empty()
        || damage.truncation_message(read.size, &read.header).is_some()
    {
        bail!("the live copy does not verify");
    }
    let checksums = stored_checksums(file, read.header.block_alloc_size, read.size)
        .context("cannot read the live copy")?;
    let leaves = Leaves::of(file, read.size).context("cannot read the live copy")?;
    Ok(Prepared {
        env: env.name.clone(),
        copy,
        live,
        read,
        checksums,
        leaves,
        blocks: 0,
        bytes: 0,
        checked: None,
    })
}

/// The integrity check of `env`'s database (its app down) on `prepared`,
/// topped up first: byte for byte the database (its headers, and every
/// block whose stored checksum changed, checked as it is copied), so the
/// database is not opened a second time. The report stays with `prepared`
/// for [`top_up`], which publishes the copy without checking it again if
/// the database's headers have not moved since. An error leaves
/// `prepared` unusable: drop it (the backup then copies the whole file).
pub fn check(env: &Env, schema: Option<&Schema>, prepared: &mut Prepared) -> Result<check::Report> {
    let head = prepared.refresh(env)?;
    let mut report = check::check(prepared.copy.partial.path(), schema, false)?;
    let damage = crate::db::layout::damage(
        prepared.copy.partial.as_file(),
        &prepared.read.header,
        prepared.read.size,
        &prepared.read.bad_blocks,
    );
    for message in damage.checksum_messages(&prepared.read.header) {
        report.problems.push(check::Problem {
            kind: check::ProblemKind::Checksum,
            message,
        });
    }
    report.path = env.db.clone();
    prepared.checked = Some((report.clone(), head));
    Ok(report)
}

/// Tops up `prepared` with what changed in `env`'s database since it was
/// copied or last topped up (the app is down now), verifies it and
/// publishes it as a backup of `dir`, then rotates. The check [`check`]
/// made stands when the database's headers are those it was checked at:
/// DuckDB changes no block in use without writing a new header, and leaves
/// a `.wal` when it did not get to.
pub fn top_up(
    env: &Env,
    dir: &Path,
    rotation: &Rotation,
    schema: Option<&Schema>,
    mut prepared: Prepared,
) -> Result<Made> {
    let checked = match prepared.checked.take() {
        Some((report, head)) if headers_now(env)? == head => Some(report),
        _ => {
            prepared.refresh(env)?;
            None
        }
    };
    let Prepared {
        mut copy,
        live,
        read,
        blocks,
        bytes,
        ..
    } = prepared;
    copy.copied = read.size;
    copy.read_back = Ok(read);
    backup::verify_and_publish(
        env,
        dir,
        rotation,
        schema,
        copy,
        Taken::TopUp {
            live,
            blocks,
            bytes,
        },
        checked,
    )
}

/// The database's headers now, when it has no `.wal` (anything else
/// matches no headers).
fn headers_now(env: &Env) -> Result<Vec<u8>> {
    if wal_left(&env.db) {
        return Ok(Vec::new());
    }
    let Some(file) = crate::db::swap::hold(&env.db)? else {
        return Ok(Vec::new());
    };
    let mut head = vec![0u8; BLOCKS_START as usize];
    file.read_exact_at(&mut head, 0)
        .with_context(|| format!("cannot read `{}`", env.db.display()))?;
    Ok(head)
}

fn wal_left(db: &Path) -> bool {
    crate::db::wal::path_of(db)
        .metadata()
        .is_ok_and(|meta| meta.len() > 0)
}

impl Prepared {
    /// Copies into the copy what changed in `env`'s database since it was
    /// taken or last topped up: the headers, and every block whose stored
    /// checksum changed, that failed its checksum, or lies past the copy's
    /// end, each checked as it is copied; the copy takes the file's length.
    /// Returns the headers copied. An error leaves `self` unusable.
    fn refresh(&mut self, env: &Env) -> Result<Vec<u8>> {
        let source = &env.db;
        if wal_left(source) {
            bail!("the app left a .wal (it did not close its database cleanly)");
        }
        // Read through the locked descriptor itself, so that nobody opens the
        // file meanwhile (a second descriptor closed would drop the lock).
        let Some(file) = crate::db::swap::hold(source)? else {
            bail!("no database file at `{}`", source.display());
        };
        let size = file.metadata()?.len();
        let mut head = vec![0u8; BLOCKS_START as usize];
        file.read_exact_at(&mut head, 0)
            .with_context(|| format!("cannot read `{}`", source.display()))?;
        let header = header::parse(&head, size).map_err(|problem| anyhow::anyhow!("{problem}"))?;
        let block = header.block_alloc_size;
        if block != self.read.header.block_alloc_size || header.encrypted {
            bail!("the database's block size or encryption changed");
        }
        // The copy was opened to be read: write through a descriptor of its own.
        let target = &File::options()
            .read(true)
            .write(true)
            .open(self.copy.partial.path())
            .with_context(|| format!("cannot open `{}`", self.copy.partial.path().display()))?;
        target.write_all_at(&head, 0)?;
        let failed_before: HashSet<u64> = self.read.bad_blocks.iter().copied().collect();
        let mut checksums = stored_checksums(&file, block, size)
            .with_context(|| format!("cannot read `{}`", source.display()))?;
        let mut changed = vec![(0, BLOCKS_START)];
        let mut bad = Vec::new();
        let mut bytes = vec![0u8; block as usize];
        let blocks = size.saturating_sub(BLOCKS_START).div_ceil(block);
        for id in 0..blocks {
            let offset = BLOCKS_START + id * block;
            let len = block.min(size - offset) as usize;
            let same = offset + block <= self.read.size
                && !failed_before.contains(&id)
                && checksums.get(id as usize) == self.checksums.get(id as usize);
            if same {
                continue;
            }
            file.read_exact_at(&mut bytes[..len], offset)
                .with_context(|| format!("cannot read `{}`", source.display()))?;
            if !(len as u64 == block && blocks::block_ok(&bytes)) {
                if id < header.block_count {
                    bad.push(id);
                }
                // Copied again next time, like every block that failed.
                if let Some(stored) = checksums.get_mut(id as usize) {
                    *stored = !*stored;
                }
            }
            target.write_all_at(&bytes[..len], offset)?;
            changed.push((offset, len as u64));
        }
        target.set_len(size)?;
        drop(file);
        self.leaves.update(target, size, &changed)?;
        let hash = match self.leaves.root() {
            Some(hash) => hash,
            None => crate::fsx::hash_file(self.copy.partial.path())?,
        };
        self.blocks += changed.len() as u64 - 1;
        self.bytes += changed.iter().map(|(_, len)| len).sum::<u64>();
        self.checksums = checksums;
        self.read = ReadBack {
            hash,
            size,
            // Those in use must verify; the others are free to fail.
            bad_blocks: bad,
            checked: true,
            header,
        };
        Ok(head)
    }
}

/// The stored checksum (the first 8 bytes) of each whole block of `file`
/// below `end`, by block id; read on up to 4 threads, since these are as
/// many reads as blocks (16,384 at 4 GiB).
fn stored_checksums(file: &File, block: u64, end: u64) -> std::io::Result<Vec<u64>> {
    let count = end.saturating_sub(BLOCKS_START) / block;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) as u64;
    let per_thread = count.div_ceil(threads).max(1);
    let read = |first: u64| -> std::io::Result<Vec<u64>> {
        let mut stored = [0u8; 8];
        (first..count.min(first + per_thread))
            .map(|id| {
                file.read_exact_at(&mut stored, BLOCKS_START + id * block)?;
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

/// The chaining values of a file's 64 KiB leaves: its blake3 without
/// reading it all again when a few ranges change.
struct Leaves {
    cvs: Vec<ChainingValue>,
    size: u64,
}

impl Leaves {
    /// Reads `file` (of `size` bytes) whole.
    fn of(file: &File, size: u64) -> std::io::Result<Leaves> {
        let mut leaves = Leaves {
            cvs: Vec::new(),
            size: 0,
        };
        leaves.update(file, size, &[(0, size)])?;
        Ok(leaves)
    }

    /// `file` is now `size` bytes long, and the `(offset, length)` ranges
    /// changed: hashes their leaves again, and the last one.
    fn update(&mut self, file: &File, size: u64, ranges: &[(u64, u64)]) -> std::io::Result<()> {
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
    fn root(&self) -> Option<blake3::Hash> {
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
