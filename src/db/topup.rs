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

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::db::Env;
use crate::db::backup::{self, Copy, Live, Made, Taken};
use crate::db::blocks::{self, ReadBack, stored_checksums};
use crate::db::catalog::Schema;
use crate::db::check;
use crate::db::header::{self, BLOCKS_START};
use crate::db::leaves::Leaves;
use crate::db::retention::Rotation;

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
