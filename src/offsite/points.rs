//! Points of continuous off-site copies: a live copy of the database
//! (`db::live`), stored as the blocks the store does not hold yet, packed
//! (see [`pack`]), and a manifest that maps every block of the file: a full
//! map, so that a restore never walks a chain of points. `upkeep
//! replicate` ([`super::replicate`]) ships them.
//!
//! Under the environment's folder of the store: `ENV/packs/HASH.pack` (the
//! blake3 of the pack's bytes) and `ENV/points/MS-ITERATION.json` (MS: when
//! the copy was taken, in Unix milliseconds). The manifest is written last,
//! create-only: no manifest, no point. The file is cut at its headers (the
//! first 12 KiB) and then at each of DuckDB's blocks, the grain at which
//! DuckDB changes it.
//!
//! What the app commits after a point goes up as `.wal` segments
//! (`db::segment`): `ENV/segments/POINT/SEQ-MS-BLAKE3.wal` (`.wal.age`
//! when sealed), MS being when the segment was read, so every commit in it
//! was made before then, and BLAKE3 the hash of its stored bytes; segment 0
//! is the `.wal` the live copy kept. A restore
//! at a moment T takes the newest point taken at or before T and its
//! segments read at or before T, in order, with no gap.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::Site;
use super::crypt::{Identities, Recipients};
use super::pack::{self, Pack};
use super::store::Store;
use crate::db::header::{self, BLOCKS_START};
use crate::db::leaves::Leaves;

mod prune;
pub use prune::{Keep, Pruned};

const FORMAT: u32 = 1;
/// Adjacent blocks of a pack are fetched together, up to this much a GET.
const RANGE_LIMIT: u64 = 16 << 20;

/// A block of a point: which pack holds it, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Located {
    pub pack: String,
    #[serde(flatten)]
    pub block: pack::Stored,
}

/// A point's manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub format: u32,
    pub env: String,
    /// When the copy was taken.
    pub created_at: String,
    /// The checkpoint iteration of the file.
    pub iteration: u64,
    pub size: u64,
    pub blake3: String,
    pub encrypted: bool,
    /// The id of the key its blocks are named with (see [`key_id`]).
    pub naming_key: String,
    /// Every piece of the file, in order: the headers, then each block.
    pub blocks: Vec<Located>,
}

/// What the last point shipped from a copy named, so that the next point
/// of the same copy names only what changed (see [`Points::ship`]).
#[derive(Default)]
pub struct Named {
    /// The block size the names are of.
    block: u64,
    /// The name of each piece: the headers, then each block.
    names: Vec<String>,
    leaves: Option<Leaves>,
}

/// What shipping a point sent.
#[derive(Debug, Clone, Serialize)]
pub struct Shipped {
    /// The manifest's key.
    pub key: String,
    pub blocks: u64,
    /// Blocks the store did not hold, and their bytes as sent.
    pub new_blocks: u64,
    pub new_bytes: u64,
    pub puts: u64,
}

/// What a restore at a moment used.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The point's manifest key.
    pub point: String,
    /// Segments replayed after it.
    pub segments: u64,
    /// The newest moment it holds: when its last segment was read, or
    /// the point taken.
    pub moment: Timestamp,
    /// Blocks an interrupted restore had fetched already.
    pub resumed: u64,
}

/// The moments the continuous copies of an environment can restore.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub points: usize,
    /// When the oldest point was taken (RFC 3339).
    pub from: String,
    /// The newest moment shipped: the newest point's last segment, or the
    /// point itself.
    pub to: String,
    /// The moments of the points before `from` that retention kept, each
    /// restorable as it was then (RFC 3339, oldest first).
    pub older: Vec<String>,
}

/// The first two numbers of a point's or a segment's name:
/// `MS-ITERATION.json`, `SEQ-MS-BLAKE3.wal`.
fn numbers(key: &str) -> Option<(i64, i64)> {
    let mut parts = key.rsplit('/').next()?.split('.').next()?.split('-');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The points of one environment's database in the store.
pub struct Points {
    store: Store,
    env: String,
    /// The key this host names its blocks with (see [`Points::naming_key`]).
    naming_key: Option<[u8; 32]>,
    recipients: Option<Recipients>,
    /// Every block the store's points use, by name.
    known: HashMap<String, Located>,
    /// The packs each point learned or shipped uses, by manifest key.
    packs: HashMap<String, BTreeSet<String>>,
}

impl Points {
    /// Opens the points of `env` in `site`'s store.
    pub fn open(site: &Site, env: &str) -> Result<Points> {
        let store = Store::open(&site.spec.target)?;
        let recipients = match &site.spec.encrypt_to {
            Some(keys) => Some(Recipients::load(keys, site.root)?),
            None => None,
        };
        Ok(Points {
            store,
            env: env.to_string(),
            naming_key: None,
            recipients,
            known: HashMap::new(),
            packs: HashMap::new(),
        })
    }

    /// Reads every manifest once (one LIST) to learn which blocks the
    /// store holds: before shipping, so that only new blocks go up.
    pub fn learn(&mut self) -> Result<()> {
        for key in self.keys()? {
            let point = self.manifest(&key)?;
            self.learn_point(&key, &point);
        }
        Ok(())
    }

    /// Learns the blocks of point `key`, and the packs it uses.
    fn learn_point(&mut self, key: &str, point: &Point) {
        let packs = point
            .blocks
            .iter()
            .map(|block| block.pack.clone())
            .collect();
        self.packs.insert(key.to_string(), packs);
        for block in &point.blocks {
            self.known.insert(block.block.name.clone(), block.clone());
        }
    }

    /// The manifests' keys, oldest first.
    pub fn keys(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .list(&format!("{}/points/", self.env))?
            .into_iter()
            .map(|object| object.key)
            .filter(|key| key.ends_with(".json"))
            .collect())
    }

    pub fn manifest(&self, key: &str) -> Result<Point> {
        let bytes = self.store.read(key)?;
        let point: Point = serde_json::from_slice(&bytes)
            .with_context(|| format!("`{key}` is not a point's manifest"))?;
        if point.format != FORMAT {
            bail!(
                "`{key}` is a point of format {}, upkeep reads {FORMAT}",
                point.format
            );
        }
        // Sizes are read before anything is allocated for them: a damaged
        // manifest is an error, never an allocation of its say-so.
        if let Some(block) = point.blocks.iter().find(|located| {
            located.block.plain_len > pack::PACK_LIMIT || located.block.len > pack::PACK_LIMIT
        }) {
            bail!(
                "`{key}` is damaged: block {} is said to be larger than a pack",
                block.block.name
            );
        }
        Ok(point)
    }

    /// Ships the database file at `copy` (a live copy at checkpoint
    /// `iteration`, taken at `taken_at`) as a point: the blocks the store
    /// lacks in packs, then the manifest. `named` is what the last point
    /// shipped from the same copy named, and `changed` the byte ranges of
    /// the copy written since: only those pieces are read and named again,
    /// and its blake3 is computed from the leaves kept in `named`. A new
    /// `Named` reads the whole file.
    pub fn ship(
        &mut self,
        copy: &Path,
        iteration: u64,
        taken_at: Timestamp,
        changed: &[(u64, u64)],
        named: &mut Named,
    ) -> Result<Shipped> {
        let Some(naming_key) = self.naming_key else {
            bail!("no naming key: call Points::naming_key first");
        };
        let unreadable = || format!("cannot read `{}`", copy.display());
        let file = File::open(copy).with_context(unreadable)?;
        let size = file.metadata()?.len();
        let header = header::read(copy)
            .with_context(unreadable)?
            .map_err(|problem| anyhow::anyhow!("`{}`: {problem}", copy.display()))?;
        let block = header.block_alloc_size;
        let piece_of = |offset: u64| match offset.checked_sub(BLOCKS_START) {
            None => 0,
            Some(past) => 1 + past / block,
        };
        let pieces = 1 + size.saturating_sub(BLOCKS_START).div_ceil(block);
        if named.block != block {
            named.names.clear();
            named.block = block;
        }
        let dirty: BTreeSet<u64> = changed
            .iter()
            .filter(|(_, len)| *len > 0)
            .flat_map(|&(offset, len)| piece_of(offset)..=piece_of(offset + len - 1))
            .collect();
        named.names.truncate(pieces as usize);
        let mut shipped = Shipped {
            key: String::new(),
            blocks: pieces,
            new_blocks: 0,
            new_bytes: 0,
            puts: 0,
        };
        let mut pack = Pack::default();
        let mut bytes = vec![0u8; block.max(BLOCKS_START) as usize];
        for index in 0..pieces {
            let reused = named
                .names
                .get(index as usize)
                .filter(|name| !dirty.contains(&index) && self.known.contains_key(*name));
            if reused.is_some() {
                continue;
            }
            let (at, len) = match index {
                0 => (0, BLOCKS_START.min(size)),
                _ => {
                    let at = BLOCKS_START + (index - 1) * block;
                    (at, block.min(size - at))
                }
            };
            let piece = &mut bytes[..len as usize];
            file.read_exact_at(piece, at).with_context(unreadable)?;
            let name = pack::name(&naming_key, piece);
            if !self.known.contains_key(&name) && !pack.holds(&name) {
                if !pack.add(name.clone(), piece, self.recipients.as_ref())? {
                    self.send(std::mem::take(&mut pack), &mut shipped)?;
                    pack.add(name.clone(), piece, self.recipients.as_ref())?;
                }
                shipped.new_blocks += 1;
            }
            match named.names.get_mut(index as usize) {
                Some(slot) => *slot = name,
                None => named.names.push(name),
            }
        }
        if !pack.is_empty() {
            self.send(pack, &mut shipped)?;
        }
        match named.leaves.as_mut() {
            Some(leaves) => leaves.update(&file, size, changed),
            None => Leaves::of(&file, size).map(|leaves| named.leaves = Some(leaves)),
        }
        .with_context(unreadable)?;
        let blake3 = match named.leaves.as_ref().and_then(Leaves::root) {
            Some(hash) => hash,
            None => crate::fsx::hash_file(copy)?,
        };
        let point = Point {
            format: FORMAT,
            env: self.env.clone(),
            created_at: taken_at.to_string(),
            iteration,
            size,
            blake3: blake3.to_hex().to_string(),
            encrypted: self.recipients.is_some(),
            naming_key: key_id(&naming_key),
            blocks: named
                .names
                .iter()
                .map(|name| self.known[name].clone())
                .collect(),
        };
        shipped.key = format!(
            "{}/points/{:013}-{iteration}.json",
            self.env,
            taken_at.as_millisecond()
        );
        if !self
            .store
            .create(&shipped.key, serde_json::to_vec(&point)?)?
        {
            bail!("a point named `{}` is already in the store", shipped.key);
        }
        shipped.puts += 1;
        self.learn_point(&shipped.key, &point);
        Ok(shipped)
    }

    /// Sends a full pack, and learns where its blocks are.
    fn send(&mut self, pack: Pack, shipped: &mut Shipped) -> Result<()> {
        let (bytes, blocks) = pack.finish();
        let key = format!("{}/packs/{}.pack", self.env, blake3::hash(&bytes).to_hex());
        shipped.new_bytes += bytes.len() as u64;
        // Create-only: a pack of the same bytes already there is the same.
        self.store.create(&key, bytes)?;
        shipped.puts += 1;
        for block in blocks {
            self.known.insert(
                block.name.clone(),
                Located {
                    pack: key.clone(),
                    block,
                },
            );
        }
        Ok(())
    }

    /// The key this host names its blocks with: kept in `state_dir`
    /// (`naming-key-ENV`, 0600), else made at random there; and in the
    /// store as `ENV/naming-keys/ID` (sealed to the recipients as `ID.age`),
    /// so that a restore elsewhere reads it (with the identity). A host that
    /// cannot read the store's key (it holds no identity) makes its own.
    pub fn naming_key(&mut self, state_dir: &Path) -> Result<[u8; 32]> {
        let local = state_dir.join(format!("naming-key-{}", self.env));
        let key = match std::fs::read(&local) {
            Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                anyhow::anyhow!(
                    "`{}` is not a naming key (32 bytes): remove it, and a new one is made",
                    local.display()
                )
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                File::open("/dev/urandom")
                    .and_then(|mut random| std::io::Read::read_exact(&mut random, &mut key))
                    .context("cannot read /dev/urandom")?;
                crate::fsx::create_private_dir(state_dir)?;
                // Whole or not at all: a crash never leaves half a key.
                crate::fsx::write_atomic(&local, &key)?;
                key
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read `{}`", local.display()));
            }
        };
        let (bytes, suffix) = match &self.recipients {
            Some(recipients) => (recipients.seal(&key)?, ".age"),
            None => (key.to_vec(), ""),
        };
        // Create-only: the same key is already there after the first run.
        self.store.create(
            &format!("{}/naming-keys/{}{suffix}", self.env, key_id(&key)),
            bytes,
        )?;
        self.naming_key = Some(key);
        Ok(key)
    }

    /// The naming key `id` as the store holds it.
    fn stored_key(&self, id: &str, identities: Option<&Identities>) -> Result<[u8; 32]> {
        let folder = format!("{}/naming-keys/{id}", self.env);
        let bytes = match identities {
            Some(identities) => {
                let key = format!("{folder}.age");
                identities.open(&self.store.read(&key)?, &key)?
            }
            None => self.store.read(&folder)?,
        };
        match <[u8; 32]>::try_from(bytes.as_slice()) {
            Ok(key) if key_id(&key) == id => Ok(key),
            _ => bail!(
                "the naming key `{folder}` in the store is damaged: its points cannot be restored"
            ),
        }
    }

    /// Ships `bytes`, segment `seq` of point `point` (its manifest key), read
    /// from the `.wal` at `read_at`; create-only. Returns its key.
    pub fn ship_segment(
        &self,
        point: &str,
        seq: u64,
        read_at: Timestamp,
        bytes: &[u8],
    ) -> Result<String> {
        let stem = point_stem(point)?;
        let (stored, suffix) = match &self.recipients {
            Some(recipients) => (recipients.seal(bytes)?, ".wal.age"),
            None => (bytes.to_vec(), ".wal"),
        };
        let key = format!(
            "{}/segments/{stem}/{seq:010}-{:013}-{}{suffix}",
            self.env,
            read_at.as_millisecond(),
            blake3::hash(&stored).to_hex()
        );
        if !self.store.create(&key, stored)? {
            bail!("a segment named `{key}` is already in the store");
        }
        Ok(key)
    }

    /// Restores the database as it was at `at` into `dest` (a file that
    /// must not exist) and `dest`'s `.wal`: the newest point taken at or
    /// before `at`, and its segments read at or before `at`. DuckDB replays
    /// the `.wal` when it opens the file.
    pub fn restore_at(
        &self,
        at: Timestamp,
        identities: Option<&Identities>,
        dest: &Path,
    ) -> Result<Restored> {
        let at = at.as_millisecond();
        let Some(point) = self
            .keys()?
            .into_iter()
            .rfind(|key| numbers(key).is_some_and(|(taken, _)| taken <= at))
        else {
            bail!(
                "no point of `{}` was taken at or before that moment",
                self.env
            );
        };
        let (manifest, resumed) = self.restore(&point, identities, dest)?;
        let segments: Vec<Segment> = self
            .segments(&point)?
            .into_iter()
            .take_while(|segment| segment.read_at <= at)
            .collect();
        if let Some(missing) = gap(&segments) {
            bail!("point `{point}`: {missing}, so the moments after it cannot be restored");
        }
        let mut wal = Vec::new();
        let mut newest = numbers(&point).map_or(0, |(taken, _)| taken);
        for segment in &segments {
            let Some(stored) = self.read_segment(&segment.key)? else {
                bail!(
                    "segment {} of point `{point}` is damaged (its bytes are not those shipped): \
                     the moments after it cannot be restored; restore to an earlier moment",
                    segment.seq
                );
            };
            match (manifest.encrypted, identities) {
                (true, Some(identities)) => wal.extend(identities.open(&stored, &segment.key)?),
                _ => wal.extend_from_slice(&stored),
            }
            newest = newest.max(segment.read_at);
        }
        if !wal.is_empty() {
            std::fs::write(crate::db::wal::path_of(dest), &wal)
                .with_context(|| format!("cannot write the .wal of `{}`", dest.display()))?;
        }
        Ok(Restored {
            point,
            segments: segments.len() as u64,
            moment: Timestamp::from_millisecond(newest).unwrap_or(Timestamp::UNIX_EPOCH),
            resumed,
        })
    }

    /// The segments of point `point` (its manifest key) in the store, in
    /// order (one LIST).
    fn segments(&self, point: &str) -> Result<Vec<Segment>> {
        let folder = format!("{}/segments/{}/", self.env, point_stem(point)?);
        self.store
            .list(&folder)?
            .into_iter()
            .map(|object| {
                let (seq, read_at) = numbers(&object.key)
                    .with_context(|| format!("`{}` is not a segment's name", object.key))?;
                Ok(Segment {
                    seq,
                    read_at,
                    key: object.key,
                })
            })
            .collect()
    }

    /// A segment's bytes as stored; `None` when they are not those shipped
    /// (its name holds their blake3).
    fn read_segment(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let (_, mut download) = self.store.reader(key)?;
        let mut stored = Vec::new();
        std::io::Read::read_to_end(&mut download, &mut stored)?;
        let shipped = key.contains(&format!("-{}.", blake3::hash(&stored).to_hex()));
        Ok(shipped.then_some(stored))
    }

    /// Writes point `key` into `dest`: adjacent blocks of a pack come in
    /// one ranged GET; each block is checked (and decrypted with
    /// `identities`) as it comes; then the whole file's blake3. A block
    /// that `dest` already holds at its place (an interrupted restore's:
    /// its keyed name matches) is not fetched again. An error may leave
    /// `dest` half written: restore into a scratch folder. Returns the
    /// point, and how many of its blocks were already in `dest`.
    pub fn restore(
        &self,
        key: &str,
        identities: Option<&Identities>,
        dest: &Path,
    ) -> Result<(Point, u64)> {
        let point = self.manifest(key)?;
        if self.recipients.is_some() && !point.encrypted {
            bail!(
                "point `{key}` is not encrypted, but `backups.offsite.encrypt_to` is set: \
                 anyone who can write to the store could have put it there; nothing was changed"
            );
        }
        if point.encrypted && identities.is_none() {
            bail!(crate::error::bad_input(format!(
                "point `{key}` is encrypted: give its age identity with --identity FILE \
                 (or UPKEEP_AGE_IDENTITY); nothing was changed"
            )));
        }
        // What an interrupted restore into `dest` fetched stays: each block
        // already there under its name is not fetched again.
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dest)
            .with_context(|| format!("cannot create `{}`", dest.display()))?;
        let held = file.metadata()?.len();
        // Where each piece goes in the file, grouped by pack, in pack order.
        let mut by_pack: BTreeMap<&str, Vec<(u64, &Located)>> = BTreeMap::new();
        let mut at = 0;
        for block in &point.blocks {
            by_pack.entry(&block.pack).or_default().push((at, block));
            at += block.block.plain_len;
        }
        if at != point.size {
            bail!(
                "point `{key}` maps {at} bytes, not its {} bytes",
                point.size
            );
        }
        let identities = identities.filter(|_| point.encrypted);
        let naming_key = self.stored_key(&point.naming_key, identities)?;
        // Runs of adjacent blocks of a pack, each fetched with one ranged
        // GET, several at once.
        let mut runs: Vec<Run> = Vec::new();
        let mut bytes = Vec::new();
        let mut resumed = 0;
        for (pack, mut pieces) in by_pack {
            pieces.sort_by_key(|(_, located)| located.block.offset);
            for (file_at, located) in pieces {
                let block = &located.block;
                if file_at + block.plain_len <= held {
                    bytes.resize(block.plain_len as usize, 0);
                    file.read_exact_at(&mut bytes, file_at)
                        .with_context(|| format!("cannot read `{}`", dest.display()))?;
                    if pack::name(&naming_key, &bytes) == block.name {
                        resumed += 1;
                        continue;
                    }
                }
                match runs.last_mut() {
                    Some(run)
                        if run.pack == pack
                            && run.range.end == block.offset
                            && block.offset + block.len - run.range.start <= RANGE_LIMIT =>
                    {
                        run.range.end = block.offset + block.len;
                        run.pieces.push((file_at, located));
                    }
                    _ => runs.push(Run {
                        pack,
                        range: block.offset..block.offset + block.len,
                        pieces: vec![(file_at, located)],
                    }),
                }
            }
        }
        let wanted: Vec<(String, std::ops::Range<u64>)> = runs
            .iter()
            .map(|run| (run.pack.to_string(), run.range.clone()))
            .collect();
        self.store.read_ranges(&wanted, &mut |index, bytes| {
            let run = &runs[index];
            for (file_at, located) in &run.pieces {
                let from = (located.block.offset - run.range.start) as usize;
                let stored = &bytes[from..from + located.block.len as usize];
                let plain = pack::open(run.pack, &located.block, stored, &naming_key, identities)?;
                file.write_all_at(&plain, *file_at)
                    .with_context(|| format!("cannot write `{}`", dest.display()))?;
            }
            Ok(())
        })?;
        file.set_len(point.size)?;
        file.sync_all()?;
        let hash = crate::fsx::hash_file(dest)?;
        if hash.to_hex().as_str() != point.blake3 {
            bail!(
                "the file restored from point `{key}` is not the one shipped (its blake3 differs)"
            );
        }
        Ok((point, resumed))
    }
}

/// Adjacent blocks of a pack, fetched with one ranged GET, and where
/// each goes in the file.
struct Run<'a> {
    pack: &'a str,
    range: std::ops::Range<u64>,
    pieces: Vec<(u64, &'a Located)>,
}

/// A segment of a point in the store.
struct Segment {
    seq: i64,
    read_at: i64,
    key: String,
}

/// The first segment missing from `segments` (in order, from the first),
/// said in words; `None` when they follow each other from 0 or 1 (segment
/// 0, the live copy's own `.wal`, is there only when it held commits).
fn gap(segments: &[Segment]) -> Option<String> {
    let mut expected = None;
    for segment in segments {
        match expected {
            None if segment.seq > 1 => {
                return Some(format!("segments 0 to {} are missing", segment.seq - 1));
            }
            Some(next) if segment.seq != next => return Some(format!("segment {next} is missing")),
            _ => {}
        }
        expected = Some(segment.seq + 1);
    }
    None
}

/// `MS-ITERATION` of `ENV/points/MS-ITERATION.json`.
fn point_stem(key: &str) -> Result<&str> {
    key.rsplit('/')
        .next()
        .and_then(|name| name.strip_suffix(".json"))
        .with_context(|| format!("`{key}` is not a point's manifest key"))
}

/// A naming key's id: the first 16 hex digits of its blake3.
fn key_id(key: &[u8; 32]) -> String {
    blake3::hash(key).to_hex()[..16].to_string()
}

/// Restores `env`'s database as it was at `at` (the newest shipped commit
/// when `None`) from its points into a verified local backup, as `fetch`
/// does for a pushed one: the point and its segments are written into a
/// temporary folder, DuckDB replays the `.wal` and checkpoints, the deep
/// check passes, and only then is it given its name (the moment's stamp)
/// and a manifest. `None` when the store holds no point of `env`.
pub fn fetch(
    site: &Site,
    env: &crate::db::Env,
    at: Option<Timestamp>,
    identity: Option<&Path>,
    schema: Option<&crate::db::catalog::Schema>,
) -> Result<Option<super::Fetched>> {
    use crate::db::backups;
    let points = Points::open(site, &env.name)?;
    if points.keys()?.is_empty() {
        return Ok(None);
    }
    let identities = identity.map(Identities::load).transpose()?;
    let dir = site.backups_dir;
    crate::fsx::create_private_dir(dir)?;
    // A folder of its own for each environment, kept when a restore is
    // interrupted: the next one fetches only the blocks it lacks. Only the
    // database file stays (a `.wal` or DuckDB's files of a replay cut
    // short would be replayed again).
    let folder = dir.join(format!(".resume-{}", env.name));
    crate::fsx::create_private_dir(&folder)?;
    for entry in std::fs::read_dir(&folder)?.flatten() {
        if entry.file_name() != "moment.duckdb" {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let Checked {
        dest,
        restored,
        report,
        hash,
    } = restore_checked(&points, at, identities.as_ref(), schema, &folder)?;
    let shown = at.unwrap_or(restored.moment);
    let name = backups::file_name(&env.name, &shown.strftime("%Y%m%d_%H%M%S").to_string());
    let path = dir.join(&name);
    if path.exists() {
        let _ = std::fs::remove_dir_all(&folder);
        bail!(
            "a local backup `{name}` is already in `{}`: restore it by name (`upkeep restore {} {name}`); nothing was changed",
            dir.display(),
            env.name
        );
    }
    let size = std::fs::metadata(&dest)?.len();
    let manifest = crate::db::backup::manifest(env, shown, size, hash, &report)?;
    let file = File::open(&dest).with_context(|| format!("cannot read `{}`", dest.display()))?;
    let partial =
        tempfile::NamedTempFile::from_parts(file, tempfile::TempPath::try_from_path(&dest)?);
    backups::publish(partial, &path, &manifest)?;
    let _ = std::fs::remove_dir_all(&folder);
    Ok(Some(super::Fetched {
        name: name.clone(),
        downloaded: true,
        resumed: restored.resumed,
        verified: Some(crate::db::restore::Verified {
            backup: backups::resolve(dir, &env.name, &name)?,
            hash,
        }),
    }))
}

/// A moment restored and checked (see [`restore_checked`]).
struct Checked {
    dest: std::path::PathBuf,
    restored: Restored,
    report: crate::db::check::Report,
    hash: blake3::Hash,
}

/// The database as it was `at` (default: the newest commit shipped),
/// restored into `folder` as `moment.duckdb`: DuckDB replays its segments
/// and checkpoints, then the deep check must pass.
fn restore_checked(
    points: &Points,
    at: Option<Timestamp>,
    identities: Option<&Identities>,
    schema: Option<&crate::db::catalog::Schema>,
    folder: &Path,
) -> Result<Checked> {
    let dest = folder.join("moment.duckdb");
    // A moment a little ahead: every segment shipped so far.
    let moment = at.unwrap_or_else(|| Timestamp::now() + jiff::SignedDuration::from_secs(60));
    let restored = points.restore_at(moment, identities, &dest)?;
    crate::db::wal::replay(&dest).map_err(|error| {
        anyhow::anyhow!(
            "point `{}` and its segments: {error:#}; not used, nothing was changed",
            restored.point
        )
    })?;
    let report = crate::db::check::check(&dest, schema, true)?;
    let (true, Some(hash)) = (report.ok(), report.blake3) else {
        bail!(
            "the database restored from point `{}` does not pass the deep check: {}; not used, nothing was changed",
            restored.point,
            report.problem_list()
        );
    };
    Ok(Checked {
        dest,
        restored,
        report,
        hash,
    })
}

/// `verify --offsite --read-data --point NAME` (or with an identity): every
/// block of the chosen points (`newest` by default) fetched, decrypted and
/// checked against its name, and the file against its blake3, as a
/// restore of the point does, into a temporary folder of the backups
/// folder, then removed. A point is named as its manifest
/// (`MS-ITERATION.json`) or `newest`.
pub fn read_points(
    site: &Site,
    env: &crate::db::Env,
    chosen: &[String],
    identity: Option<&Path>,
) -> Result<Vec<crate::db::backups::Finding>> {
    use crate::db::backups::Finding;
    let points = Points::open(site, &env.name)?;
    let keys = points.keys()?;
    let identities = identity.map(Identities::load).transpose()?;
    crate::fsx::create_private_dir(site.backups_dir)?;
    let folder = crate::fsx::partial_dir(site.backups_dir)?;
    let newest = ["newest".to_string()];
    let chosen = match chosen.is_empty() {
        true => &newest[..],
        false => chosen,
    };
    let mut findings = Vec::new();
    for name in chosen {
        let key = match name.as_str() {
            "newest" => keys.last(),
            _ => keys
                .iter()
                .find(|key| key.rsplit('/').next() == Some(name.as_str())),
        };
        let Some(key) = key else {
            findings.push(Finding {
                name: name.clone(),
                ok: false,
                detail: format!(
                    "no point `{name}` of `{}` in the store: name one as its manifest (MS-ITERATION.json), or `newest`",
                    env.name
                ),
            });
            continue;
        };
        let dest = folder.path().join("point.duckdb");
        let read = points.restore(key, identities.as_ref(), &dest);
        let _ = std::fs::remove_file(&dest);
        findings.push(match read {
            Ok((point, _)) => Finding {
                name: key.clone(),
                ok: true,
                detail: format!(
                    "every block of the point read back{}, checked against its name, and the file against its blake3 ({} blocks)",
                    match point.encrypted {
                        true => " and decrypted",
                        false => "",
                    },
                    point.blocks.len()
                ),
            },
            Err(error) => Finding {
                name: key.clone(),
                ok: false,
                detail: format!("{error:#}"),
            },
        });
    }
    Ok(findings)
}

/// `verify --offsite --restore-test`: the newest moment of `env`'s
/// continuous copies restored into a temporary folder of the backups
/// folder and checked as a restore checks it, then removed.
pub fn restore_test(
    site: &Site,
    env: &crate::db::Env,
    identity: Option<&Path>,
    schema: Option<&crate::db::catalog::Schema>,
) -> Result<crate::db::backups::Finding> {
    let name = "restore test of the newest moment".to_string();
    let points = Points::open(site, &env.name)?;
    if points.keys()?.is_empty() {
        return Ok(crate::db::backups::Finding {
            name,
            ok: true,
            detail: format!(
                "no continuous copies of `{}`: nothing to restore (`upkeep replicate {}` makes them)",
                env.name, env.name
            ),
        });
    }
    let identities = identity.map(Identities::load).transpose()?;
    crate::fsx::create_private_dir(site.backups_dir)?;
    let folder = crate::fsx::partial_dir(site.backups_dir)?;
    Ok(
        match restore_checked(&points, None, identities.as_ref(), schema, folder.path()) {
            Ok(checked) => crate::db::backups::Finding {
                name,
                ok: true,
                detail: format!(
                    "{} restored from point `{}` and {} segment(s): DuckDB replayed them, the deep check passed",
                    checked.restored.moment, checked.restored.point, checked.restored.segments
                ),
            },
            Err(error) => crate::db::backups::Finding {
                name,
                ok: false,
                detail: format!("{error:#}"),
            },
        },
    )
}

impl Points {
    /// What `backups --offsite` says of the continuous copies; `None`
    /// when there are none.
    pub fn span(&self, wal_retention: std::time::Duration) -> Result<Option<Span>> {
        let keys = self.keys()?;
        let moments: Vec<i64> = keys
            .iter()
            .filter_map(|key| numbers(key).map(|(taken, _)| taken))
            .collect();
        let base = prune::base(&moments, wal_retention, Timestamp::now());
        let (Some(&from), Some(newest)) = (moments.get(base), keys.last()) else {
            return Ok(None);
        };
        let mut to = moments.iter().copied().max().unwrap_or(from);
        let folder = format!("{}/segments/{}/", self.env, point_stem(newest)?);
        for object in self.store.list(&folder)? {
            if let Some((_, read_at)) = numbers(&object.key) {
                to = to.max(read_at);
            }
        }
        let moment = |ms: i64| {
            Timestamp::from_millisecond(ms)
                .unwrap_or(Timestamp::UNIX_EPOCH)
                .to_string()
        };
        Ok(Some(Span {
            points: keys.len(),
            from: moment(from),
            to: moment(to),
            older: moments[..base].iter().map(|&ms| moment(ms)).collect(),
        }))
    }

    /// `verify --offsite` of the continuous copies, without the key: each
    /// point's packs are there and long enough for its blocks, its naming
    /// key is there, its segments follow each other with no gap; with
    /// `read_data`, every pack and segment is read back and hashed (a
    /// pack's name and a segment's are the blake3 of their bytes) and each
    /// block checked against its stored hash.
    pub fn verify(&self, read_data: bool) -> Result<Vec<crate::db::backups::Finding>> {
        let sizes: HashMap<String, u64> = self
            .store
            .list(&format!("{}/", self.env))?
            .into_iter()
            .map(|object| (object.key, object.size))
            .collect();
        let mut checked_packs: HashMap<String, Result<(), String>> = HashMap::new();
        let mut findings = Vec::new();
        for key in self.keys()? {
            let problem = match self.manifest(&key) {
                Ok(point) => self.problem(&key, &point, &sizes, read_data, &mut checked_packs)?,
                Err(error) => Some(crate::error::describe(&error)),
            };
            findings.push(crate::db::backups::Finding {
                name: key.clone(),
                ok: problem.is_none(),
                detail: problem.unwrap_or_else(|| {
                    match read_data {
                        true => "point verified, its packs and segments read back and hashed",
                        false => "point verified: its packs, segments and naming key are there",
                    }
                    .to_string()
                }),
            });
        }
        Ok(findings)
    }

    /// What is wrong with point `key`, if anything.
    fn problem(
        &self,
        key: &str,
        point: &Point,
        sizes: &HashMap<String, u64>,
        read_data: bool,
        checked_packs: &mut HashMap<String, Result<(), String>>,
    ) -> Result<Option<String>> {
        let naming = format!("{}/naming-keys/{}", self.env, point.naming_key);
        if !sizes.contains_key(&naming) && !sizes.contains_key(&format!("{naming}.age")) {
            return Ok(Some(format!("its naming key `{naming}` is missing")));
        }
        let mut ends: BTreeMap<&str, u64> = BTreeMap::new();
        for located in &point.blocks {
            let end = ends.entry(&located.pack).or_default();
            *end = (*end).max(located.block.offset + located.block.len);
        }
        for (pack, end) in &ends {
            match sizes.get(*pack) {
                None => return Ok(Some(format!("pack `{pack}` is missing"))),
                Some(size) if size < end => {
                    return Ok(Some(format!(
                        "pack `{pack}` is {size} bytes, its blocks need {end}"
                    )));
                }
                Some(_) => {}
            }
            if read_data {
                if !checked_packs.contains_key(*pack) {
                    let checked = self.read_pack(pack, point)?;
                    checked_packs.insert(pack.to_string(), checked);
                }
                if let Some(Err(problem)) = checked_packs.get(*pack) {
                    return Ok(Some(problem.clone()));
                }
            }
        }
        let segments = self.segments(key)?;
        if let Some(missing) = gap(&segments) {
            return Ok(Some(missing));
        }
        if read_data {
            for segment in &segments {
                if self.read_segment(&segment.key)?.is_none() {
                    return Ok(Some(format!(
                        "segment `{}` is damaged (its bytes are not those shipped)",
                        segment.key
                    )));
                }
            }
        }
        Ok(None)
    }

    /// Reads pack `pack` back: its blake3 must be its name, and each block
    /// of `point` in it must match its stored hash.
    fn read_pack(&self, pack: &str, point: &Point) -> Result<Result<(), String>> {
        let (_, mut download) = self.store.reader(pack)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut download, &mut bytes)?;
        if !pack.ends_with(&format!("/{}.pack", blake3::hash(&bytes).to_hex())) {
            return Ok(Err(format!(
                "pack `{pack}` is damaged (its bytes are not those sent)"
            )));
        }
        for located in point.blocks.iter().filter(|located| located.pack == pack) {
            let block = &located.block;
            let stored = bytes.get(block.offset as usize..(block.offset + block.len) as usize);
            if stored.is_none_or(|stored| blake3::hash(stored).to_hex().as_str() != block.blake3) {
                return Ok(Err(format!(
                    "block {} of pack `{pack}` is damaged",
                    block.name
                )));
            }
        }
        Ok(Ok(()))
    }
}
