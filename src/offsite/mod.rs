//! Off-site copies of verified backups (`backups.offsite` in upkeep.yaml):
//! push, list, verify, and fetch for a restore on a new machine.
//!
//! Each backup is two objects under `ENV/`: its data (`NAME`, or
//! `NAME.age` when encrypted) and its manifest (`NAME.manifest.json`). The
//! manifest is the commit point: it is written last, only if none is
//! there, after the data's size was checked; a data object without one is
//! never listed as a backup, and the next push removes it. Retention runs
//! only after a verified upload, and deletes the manifest before the data.
//!
//! Whoever can write to the store can plant objects there, so nothing
//! read back is trusted beyond what upkeep checks: a manifest names only
//! its own data key; a push skips a backup only when the manifest there is
//! this backup's; a restore verifies a download before it is named a
//! backup, and takes plaintext where `encrypt_to` is set only when asked.

mod credentials;
pub mod crypt;
pub mod pack;
pub mod points;
pub mod replicate;
mod store;
pub mod target;

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::db::Env;
use crate::db::backups::{self, Backup, Finding, Manifest, Status};
use crate::db::catalog::Schema;
use crate::db::restore::{self, Verified};
use crate::db::retention::{Policy, Rotation};
use crate::error::bad_input;
use crate::fsx;
use crate::progress::Progress;
use store::{Object, Store};
use target::Target;

const MANIFEST_SUFFIX: &str = ".manifest.json";
const ENCRYPTED_SUFFIX: &str = ".age";
/// A data object without a manifest, or a folder's staging file, not
/// written to for this long may be an upload in progress on another host;
/// older, it is what a crash left, and a push removes it.
const ORPHAN_AGE: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);
/// How much a download hands its writer at a time.
const CHUNK: usize = 4 << 20;
/// The off-site manifest's format version.
const FORMAT: u32 = 1;

/// Where the off-site copies of one config go, and the config's folders
/// they are made from: what every function here works with. The config
/// hands it down ([`crate::config::Config::offsite`]): off-site copies
/// know nothing of upkeep.yaml beyond it.
pub struct Site<'a> {
    pub spec: &'a Spec,
    /// upkeep.yaml, for messages.
    pub config_path: &'a Path,
    /// Its folder: recipients files are relative to it.
    pub root: &'a Path,
    pub backups_dir: &'a Path,
    pub state_dir: &'a Path,
    /// Off-site retention: `backups.offsite.retention`, else the local one.
    pub rotation: Rotation,
}

/// `backups.offsite`, checked.
#[derive(Debug, Clone)]
pub struct Spec {
    pub target: Target,
    /// age recipients or files of them (relative to upkeep.yaml's folder).
    pub encrypt_to: Option<Vec<String>>,
    /// Its own retention; else the local rotation applies.
    pub retention: Option<Policy>,
    /// `continuous:`, for `upkeep replicate`.
    pub continuous: replicate::Options,
}

/// A manifest off-site: what the data object must be, and the local
/// manifest, so that a restore on a new machine gets a verifiable backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteManifest {
    pub format: u32,
    pub env: String,
    pub name: String,
    /// The backup's bytes, as they are on disk.
    pub plaintext: Sized,
    /// The object as the store holds it (encrypted or not).
    pub object: Stored,
    pub encrypted: bool,
    /// The fingerprints of the recipients (see `crypt::fingerprint`).
    pub recipients: Vec<String>,
    pub pushed_at: String,
    pub pushed_from: String,
    pub local: Manifest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sized {
    pub size: u64,
    pub blake3: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub key: String,
    pub size: u64,
    pub blake3: String,
}

/// One backup off-site, as `upkeep backups ENV --offsite` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Remote {
    pub name: String,
    pub time: String,
    pub size: u64,
    pub encrypted: bool,
    /// `verified` (manifest and object of the right size), or what is wrong.
    pub status: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_by: Vec<&'static str>,
    #[serde(skip)]
    pub manifest: Option<RemoteManifest>,
    #[serde(skip)]
    stamp: String,
    /// The data objects of its own name that the store holds (`NAME`,
    /// `NAME.age`): what retention deletes with its manifest.
    #[serde(skip)]
    data: Vec<String>,
}

impl Remote {
    pub fn ok(&self) -> bool {
        self.status == "verified"
    }
}

/// Which local backups to push.
#[derive(Debug, Clone)]
pub enum Which {
    Newest,
    Named(String),
    All,
}

/// What a push did.
#[derive(Debug, Default, Serialize)]
pub struct Pushed {
    pub url: String,
    /// Uploaded, verified and committed: name and uploaded size.
    pub uploaded: Vec<(String, u64)>,
    /// Already off-site: nothing sent.
    pub already: Vec<String>,
    /// Deleted off-site by retention.
    pub deleted: Vec<String>,
    /// Left by a crash or a failed upload and removed.
    pub cleaned: Vec<String>,
    pub encrypted: bool,
}

/// An upload in progress, journaled so that a crash can be cleaned up.
#[derive(Serialize, Deserialize)]
struct InFlight {
    key: String,
    /// None from just before the upload is started until the store
    /// answers with its id: a crash then leaves an upload the store may
    /// have started and upkeep cannot name.
    id: Option<String>,
}

/// The journal entry of an upload, removed once the upload is settled
/// (completed or aborted); a crash leaves it for the next push.
struct Journaled(std::path::PathBuf);

impl Drop for Journaled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn manifest_key(env: &str, name: &str) -> String {
    format!("{env}/{name}{MANIFEST_SUFFIX}")
}

/// The one key the data of backup `name` of `env` may have: a manifest
/// that names any other is damage, and is never followed (not read, not
/// restored, not deleted by retention), so that a manifest can never
/// point upkeep at another environment's objects or at anything else.
fn data_key(env: &str, name: &str, encrypted: bool) -> String {
    match encrypted {
        true => format!("{env}/{name}{ENCRYPTED_SUFFIX}"),
        false => format!("{env}/{name}"),
    }
}

/// Copies verified local backups of `env` that are not off-site yet, then
/// applies off-site retention if anything was uploaded. Idempotent: a
/// second push uploads nothing.
pub fn push(site: &Site, env: &Env, which: &Which, progress: &Progress) -> Result<Pushed> {
    let recipients = match &site.spec.encrypt_to {
        Some(entries) => Some(crypt::Recipients::load(entries, site.root)?),
        None => None,
    };
    let local = backups::list(site.backups_dir, &env.name)?;
    let chosen = choose(&local, env, which, site.backups_dir)?;
    let store = Store::open(&site.spec.target)?;
    let mut pushed = Pushed {
        url: store.url.clone(),
        encrypted: recipients.is_some(),
        ..Pushed::default()
    };
    let journal = site.state_dir.join("offsite");
    pushed.cleaned = clean_up(&store, &journal, &env.name)?;
    let rotation = &site.rotation;
    let remotes = listed(&store, &env.name)?;
    let chosen = match which {
        // What retention would delete at once is not sent at all.
        Which::All => retained(&remotes, rotation, chosen),
        _ => chosen,
    };
    // Each manifest already there is checked first: one that is not this
    // backup's stops the push before anything is sent.
    let mut to_send = Vec::new();
    let mut not_ours = Vec::new();
    for backup in chosen {
        match remotes.iter().find(|remote| remote.name == backup.name) {
            None => to_send.push(backup),
            Some(remote) if holds(remote, backup) => pushed.already.push(backup.name.clone()),
            Some(remote) => not_ours.push(remote),
        }
    }
    if !not_ours.is_empty() {
        return Err(taken(&store, &env.name, &not_ours));
    }
    for backup in to_send {
        let size = upload(&store, recipients.as_ref(), env, backup, &journal, progress)?;
        pushed.uploaded.push((backup.name.clone(), size));
    }
    if let Some((newest, _)) = pushed.uploaded.iter().max_by(|a, b| a.0.cmp(&b.0)) {
        pushed.deleted = retain(&store, &env.name, rotation, newest)?;
    }
    Ok(pushed)
}

/// Whether the off-site backup `remote` is the local `backup`: listed as
/// verified (its manifest whole, its data object there and of the size
/// the manifest says), and of the same bytes (plaintext hash and size).
/// Only then may a push skip it.
fn holds(remote: &Remote, backup: &Backup) -> bool {
    match (&remote.manifest, &backup.manifest) {
        (Some(there), Some(here)) => {
            remote.ok()
                && there.plaintext.size == here.size
                && there.plaintext.blake3 == here.blake3
        }
        _ => false,
    }
}

/// The refusal of a push whose backups already have a manifest off-site
/// that is not theirs: said with each manifest's key and what is wrong.
/// Such a manifest is never replaced: it may be another host's backup of
/// the same name (which a new upload would overwrite), or the trace of
/// someone else writing to the store, which a person must see first.
fn taken(store: &Store, env: &str, remotes: &[&Remote]) -> anyhow::Error {
    let found: Vec<String> = remotes
        .iter()
        .map(|remote| {
            let why = match remote.ok() {
                false => remote.status.as_str(),
                true => "another backup of that name: its hash or size is not the local backup's",
            };
            format!("`{}` ({why})", manifest_key(env, &remote.name))
        })
        .collect();
    let data: Vec<String> = remotes
        .iter()
        .flat_map(|remote| {
            [false, true].map(|sealed| format!("`{}`", data_key(env, &remote.name, sealed)))
        })
        .collect();
    anyhow::anyhow!(
        "off-site store `{}` already holds a manifest that is not this backup's: {}; nothing was sent, \
         nothing there was changed. Look at it first (someone else may have written it); if it is not a \
         backup to keep, delete it and its data ({}), then push again",
        store.url,
        found.join(", "),
        data.join(", ")
    )
}

/// Of `chosen`, those that off-site retention keeps once they are there
/// beside the verified backups already off-site (`remote`).
fn retained<'a>(
    remote: &[Remote],
    rotation: &Rotation,
    chosen: Vec<&'a Backup>,
) -> Vec<&'a Backup> {
    let mut stamps: Vec<&str> = remote
        .iter()
        .filter(|r| r.ok())
        .map(|r| r.stamp.as_str())
        .collect();
    let first_chosen = stamps.len();
    stamps.extend(chosen.iter().map(|backup| backup.stamp.as_str()));
    let reasons = rotation.reasons(&stamps);
    chosen
        .into_iter()
        .zip(&reasons[first_chosen..])
        .filter(|(_, why)| !why.is_empty())
        .map(|(backup, _)| backup)
        .collect()
}

/// The local backups a push sends: verified ones only.
fn choose<'a>(
    local: &'a [Backup],
    env: &Env,
    which: &Which,
    dir: &Path,
) -> Result<Vec<&'a Backup>> {
    let verified = |backup: &&Backup| backup.status == Status::Verified;
    match which {
        Which::All => Ok(local.iter().filter(verified).collect()),
        Which::Newest => match local.iter().rev().find(verified) {
            Some(newest) => Ok(vec![newest]),
            None => Err(bad_input(format!(
                "no verified backup of `{}` in `{}` to push: run `upkeep backup {}` first",
                env.name,
                dir.display(),
                env.name
            ))),
        },
        Which::Named(name) => {
            let backup = local
                .iter()
                .find(|backup| &backup.name == name)
                .ok_or_else(|| {
                    bad_input(format!(
                        "no backup `{name}` of `{}` in `{}`: see `upkeep backups {}` for the names",
                        env.name,
                        dir.display(),
                        env.name
                    ))
                })?;
            if backup.status != Status::Verified {
                return Err(bad_input(format!(
                    "backup `{name}` is {}: only verified backups are pushed (nothing was uploaded)",
                    backup.status.as_str()
                )));
            }
            Ok(vec![backup])
        }
    }
}

/// Uploads one backup: streamed (encrypted when configured), its bytes
/// checked against its local manifest as they are read, its size checked
/// once stored, then its manifest committed. Returns the uploaded size.
fn upload(
    store: &Store,
    recipients: Option<&crypt::Recipients>,
    env: &Env,
    backup: &Backup,
    journal: &Path,
    progress: &Progress,
) -> Result<u64> {
    let local = backup
        .manifest
        .clone()
        .context("a verified backup has a manifest")?;
    let key = data_key(&env.name, &backup.name, recipients.is_some());
    fsx::create_private_dir(journal)?;
    let in_flight = Journaled(journal.join(format!("{}.upload.json", backup.name)));
    let write_down = |id: Option<&str>| {
        let entry = serde_json::to_vec(&InFlight {
            key: key.clone(),
            id: id.map(str::to_string),
        })?;
        fsx::write_atomic(&in_flight.0, &entry)
    };
    write_down(None)?;
    let mut upload = store.upload(&key, backup.size, recipients.is_some(), &|id| {
        write_down(Some(id))
    })?;
    let bar = progress.bytes(&format!("push {}", backup.name), backup.size);
    let streamed = (|| -> Result<(u64, blake3::Hash)> {
        let mut file = std::fs::File::open(&backup.path)
            .with_context(|| format!("cannot read `{}`", backup.path.display()))?;
        let mut pump = |sink: &mut dyn Write| -> Result<(u64, blake3::Hash)> {
            let mut hasher = blake3::Hasher::new();
            let mut read = 0u64;
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let n = file
                    .read(&mut buffer)
                    .with_context(|| format!("cannot read `{}`", backup.path.display()))?;
                if n == 0 {
                    return Ok((read, hasher.finalize()));
                }
                hasher.update(&buffer[..n]);
                sink.write_all(&buffer[..n]).with_context(|| {
                    format!("upload of `{}` to `{}` failed", backup.name, store.url)
                })?;
                read += n as u64;
                bar.set_position(read);
            }
        };
        match recipients {
            Some(recipients) => {
                let mut sealed = recipients.encrypt(&mut upload)?;
                let pumped = pump(&mut sealed)?;
                // The last chunk and its tag: without them the file is cut.
                sealed.finish().with_context(|| {
                    format!("upload of `{}` to `{}` failed", backup.name, store.url)
                })?;
                Ok(pumped)
            }
            None => pump(&mut upload),
        }
    })();
    bar.finish_and_clear();
    let checked = streamed.and_then(|(read, hash)| {
        if read != local.size || hash.to_hex().as_str() != local.blake3 {
            bail!(
                "backup `{}` changed since it was verified (its bytes differ from its manifest): not pushed; \
                 run `upkeep backup {}` for a new one",
                backup.name,
                env.name
            );
        }
        Ok(hash)
    });
    let hash = match checked {
        Ok(hash) => hash,
        Err(error) => {
            upload.abort();
            return Err(error);
        }
    };
    // Completed, or aborted by `finish` itself: nothing left to clean up.
    let uploaded = upload.finish()?;
    drop(in_flight);
    match store.size(&key)? {
        Some(size) if size == uploaded.size => {}
        other => {
            let _ = store.delete(&key);
            bail!(
                "`{key}` at `{}` holds {} after the upload of {} bytes: removed, not committed; push again",
                store.url,
                other.map_or("nothing".to_string(), |size| format!("{size} bytes")),
                uploaded.size
            );
        }
    }
    let manifest = RemoteManifest {
        format: FORMAT,
        env: env.name.clone(),
        name: backup.name.clone(),
        plaintext: Sized {
            size: local.size,
            blake3: hash.to_hex().to_string(),
        },
        object: Stored {
            key: key.clone(),
            size: uploaded.size,
            // Unencrypted, the object is the plaintext.
            blake3: uploaded.blake3.unwrap_or(hash).to_hex().to_string(),
        },
        encrypted: recipients.is_some(),
        recipients: recipients
            .map(|r| r.fingerprints.clone())
            .unwrap_or_default(),
        pushed_at: jiff::Timestamp::now().to_string(),
        pushed_from: crate::lock::hostname(),
        local,
    };
    // Create-only: if another host committed this name meanwhile, its
    // manifest stands, and this push succeeds only if it is this backup.
    let bytes = serde_json::to_vec_pretty(&manifest)?;
    if !store.create(&manifest_key(&env.name, &backup.name), bytes)? {
        let remotes = listed(store, &env.name)?;
        if !remotes
            .iter()
            .any(|remote| remote.name == backup.name && holds(remote, backup))
        {
            bail!(
                "another host committed `{}` at `{}` during this upload, and it is not this backup: \
                 `{}` is not off-site; see `upkeep verify {} --offsite --read-data`",
                manifest_key(&env.name, &backup.name),
                store.url,
                backup.name,
                env.name
            );
        }
    }
    Ok(uploaded.size)
}

/// Removes what crashes left: journaled multipart uploads (aborted), and
/// a local folder's staging files and data objects without a manifest
/// that are older than [`ORPHAN_AGE`] (younger, they may be another
/// host's upload in progress). Returns what was removed.
fn clean_up(store: &Store, journal: &Path, env: &str) -> Result<Vec<String>> {
    let mut cleaned = Vec::new();
    if let Ok(entries) = std::fs::read_dir(journal) {
        for entry in entries.flatten() {
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            if let Ok(in_flight) = serde_json::from_slice::<InFlight>(&bytes) {
                let Some(id) = &in_flight.id else {
                    if store.tracks_uploads() {
                        cleaned.push(format!(
                            "{} (an upload interrupted as it started, before the store's id for it \
                             was written down: if the store had started it, a lifecycle rule for \
                             incomplete uploads removes its parts)",
                            in_flight.key
                        ));
                    }
                    let _ = std::fs::remove_file(entry.path());
                    continue;
                };
                cleaned.push(match store.abort(&in_flight.key, id)? {
                    None => format!("{} (an interrupted upload)", in_flight.key),
                    Some(refused) => format!(
                        "{} (an interrupted upload, which the store would not abort: {refused}; \
                         it may already be complete, else a lifecycle rule for incomplete uploads removes its parts)",
                        in_flight.key
                    ),
                });
            }
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for staging in store.sweep_staging(env, ORPHAN_AGE.unsigned_abs()) {
        cleaned.push(format!("{staging} (an interrupted upload's staging file)"));
    }
    let objects = store.list(&format!("{env}/"))?;
    let now = jiff::Timestamp::now();
    for orphan in orphans(&objects) {
        if now.duration_since(orphan.modified) > ORPHAN_AGE {
            store.delete(&orphan.key)?;
            cleaned.push(format!("{} (data without a manifest)", orphan.key));
        }
    }
    Ok(cleaned)
}

/// Data objects with no manifest beside them: not backups.
fn orphans(objects: &[Object]) -> Vec<&Object> {
    let keys: std::collections::BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    objects
        .iter()
        // Pushed backups lie right in `ENV/`; the folders below it are the
        // continuous copies' (`offsite::points`), never a push's to remove.
        .filter(|object| {
            !object
                .key
                .split_once('/')
                .is_some_and(|(_, name)| name.contains('/'))
        })
        .filter(|object| !object.key.ends_with(MANIFEST_SUFFIX))
        .filter(|object| {
            let name = object
                .key
                .strip_suffix(ENCRYPTED_SUFFIX)
                .unwrap_or(&object.key);
            !keys.contains(format!("{name}{MANIFEST_SUFFIX}").as_str())
        })
        .collect()
}

/// The backups of `env` off-site, oldest first, each checked against its
/// data object's size.
pub fn list(site: &Site, env: &Env) -> Result<Vec<Remote>> {
    let store = Store::open(&site.spec.target)?;
    let mut remotes = listed(&store, &env.name)?;
    mark_kept(&mut remotes, &site.rotation);
    Ok(remotes)
}

fn listed(store: &Store, env: &str) -> Result<Vec<Remote>> {
    let objects = store.list(&format!("{env}/"))?;
    let sizes: std::collections::BTreeMap<&str, u64> =
        objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
    let mut remotes = Vec::new();
    for object in objects.iter().filter(|o| o.key.ends_with(MANIFEST_SUFFIX)) {
        let name = object.key[env.len() + 1..]
            .trim_end_matches(MANIFEST_SUFFIX)
            .to_string();
        let Some(stamp) = backups::stamp_of(env, &name) else {
            continue;
        };
        let manifest = store
            .read(&object.key)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<RemoteManifest>(&bytes).ok());
        let status = match &manifest {
            None => "unreadable manifest".to_string(),
            Some(m) if m.env != env || m.name != name => "manifest of another backup".to_string(),
            Some(m) if m.object.key != data_key(env, &name, m.encrypted) => format!(
                "its manifest names another object than `{}`: not followed",
                data_key(env, &name, m.encrypted)
            ),
            Some(m) => match sizes.get(m.object.key.as_str()) {
                None => "data object missing".to_string(),
                Some(size) if *size != m.object.size => {
                    format!(
                        "data object is {size} bytes, its manifest says {}",
                        m.object.size
                    )
                }
                Some(_) => "verified".to_string(),
            },
        };
        let data = [false, true]
            .map(|sealed| data_key(env, &name, sealed))
            .into_iter()
            .filter(|key| sizes.contains_key(key.as_str()))
            .collect();
        remotes.push(Remote {
            data,
            time: backups::human_time(&stamp),
            size: manifest.as_ref().map_or(0, |m| m.plaintext.size),
            encrypted: manifest.as_ref().is_some_and(|m| m.encrypted),
            name,
            status,
            kept_by: Vec::new(),
            manifest,
            stamp,
        });
    }
    remotes.sort_by(|a, b| a.stamp.cmp(&b.stamp).then(a.name.cmp(&b.name)));
    Ok(remotes)
}

fn mark_kept(remotes: &mut [Remote], rotation: &Rotation) {
    let listed: Vec<(&str, bool)> = remotes.iter().map(|r| (r.stamp.as_str(), r.ok())).collect();
    let reasons = rotation.kept_by(&listed);
    for (remote, reasons) in remotes.iter_mut().zip(reasons) {
        remote.kept_by = reasons;
    }
}

/// Deletes the off-site backups of `env` that `rotation` does not keep:
/// manifest first, then data. Never the newest verified one, nor the one
/// just pushed (even if a clock set back makes it look older). Only the
/// keys of a backup's own name are deleted (`NAME.manifest.json`, `NAME`,
/// `NAME.age` under `ENV/`), never the key a manifest names.
fn retain(store: &Store, env: &str, rotation: &Rotation, just_pushed: &str) -> Result<Vec<String>> {
    let mut remotes = listed(store, env)?;
    mark_kept(&mut remotes, rotation);
    let mut deleted = Vec::new();
    for remote in remotes.iter().filter(|r| r.kept_by.is_empty()) {
        if remote.name == just_pushed {
            continue;
        }
        store.delete(&manifest_key(env, &remote.name))?;
        for key in &remote.data {
            store.delete(key)?;
        }
        deleted.push(remote.name.clone());
    }
    Ok(deleted)
}

/// Checks every manifest of `env` against its object: present, of the
/// right size, and with `read_data`, of the right hash (downloaded).
/// Data objects without a manifest are findings too.
pub fn verify(
    site: &Site,
    env: &Env,
    read_data: bool,
    progress: &Progress,
) -> Result<Vec<Finding>> {
    let store = Store::open(&site.spec.target)?;
    let mut findings = Vec::new();
    for remote in listed(&store, &env.name)? {
        let mut finding = Finding {
            ok: remote.ok(),
            detail: remote.status.clone(),
            name: remote.name.clone(),
        };
        if let (true, true, Some(manifest)) = (read_data, remote.ok(), &remote.manifest) {
            let (size, reader) = store.reader(&manifest.object.key)?;
            let bar = progress.bytes(&format!("read {}", remote.name), size);
            let mut hasher = blake3::Hasher::new();
            let read = std::io::copy(&mut bar.wrap_read(reader), &mut hasher);
            bar.finish_and_clear();
            let read = read.with_context(|| {
                format!("cannot read `{}` at `{}`", manifest.object.key, store.url)
            })?;
            let hash = hasher.finalize();
            if read != manifest.object.size || hash.to_hex().as_str() != manifest.object.blake3 {
                finding.ok = false;
                finding.detail = "its data differs from its manifest (hash)".to_string();
            } else {
                finding.detail = "verified, data read back and hashed".to_string();
            }
        }
        findings.push(finding);
    }
    findings.extend(points::Points::open(site, &env.name)?.verify(read_data)?);
    for orphan in orphans(&store.list(&format!("{}/", env.name))?) {
        findings.push(Finding {
            name: orphan.key.clone(),
            ok: true,
            detail: "data without a manifest: not a backup (an upload in progress, or left by a crash; the next push removes it)"
                .to_string(),
        });
    }
    Ok(findings)
}

/// Which off-site backup a restore takes.
#[derive(Debug, Clone)]
pub enum Pick {
    Named(String),
    Latest,
}

/// What the user gives a restore from off-site to open a backup with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Opening<'a> {
    /// The age identity file (`--identity`, or `UPKEEP_AGE_IDENTITY`).
    pub identity: Option<&'a Path>,
    /// `--allow-plaintext`: an unencrypted backup is taken although
    /// `encrypt_to` is set.
    pub allow_plaintext: bool,
}

/// What [`fetch`] brought.
#[derive(Debug)]
pub struct Fetched {
    /// The backup's local name.
    pub name: String,
    /// Downloaded now (else a verified local backup of that name was used).
    pub downloaded: bool,
    /// Blocks of a point that an interrupted restore had fetched already.
    pub resumed: u64,
    /// A download, verified before it was given its name: the restore
    /// need not read it again.
    pub verified: Option<Verified>,
}

/// Brings an off-site backup into the local backups folder, checked
/// against its manifest (object hash, then the plaintext's), decrypted
/// with `opening.identity` when it is encrypted, then verified as a restore
/// verifies (DuckDB's full read, row counts) before it is given a backup's
/// name: a download that fails any check is removed, never listed. With
/// `encrypt_to` set, an unencrypted backup is refused unless
/// `opening.allow_plaintext`: anyone who can write to the store could have
/// put it there. A verified local backup of that name is used as is.
pub fn fetch(
    site: &Site,
    env: &Env,
    pick: &Pick,
    opening: Opening,
    schema: Option<&Schema>,
    progress: &Progress,
) -> Result<Fetched> {
    let store = Store::open(&site.spec.target)?;
    let remotes = listed(&store, &env.name)?;
    let remote = match pick {
        Pick::Named(name) => remotes.iter().find(|r| &r.name == name).ok_or_else(|| {
            bad_input(format!(
                "no backup `{name}` of `{}` at off-site store `{}`: see `upkeep backups {} --offsite`",
                env.name, store.url, env.name
            ))
        })?,
        Pick::Latest => remotes.iter().rev().find(|r| r.ok()).ok_or_else(|| {
            anyhow::anyhow!(
                "no verified backup of `{}` at off-site store `{}`: nothing to restore, nothing was changed",
                env.name,
                store.url
            )
        })?,
    };
    let Some(manifest) = remote.manifest.as_ref().filter(|_| remote.ok()) else {
        bail!(
            "off-site backup `{}` cannot be restored: {}; nothing was changed",
            remote.name,
            remote.status
        );
    };
    if site.spec.encrypt_to.is_some() && !manifest.encrypted && !opening.allow_plaintext {
        bail!(
            "off-site backup `{}` is not encrypted, but `backups.offsite.encrypt_to` is set in `{}`: \
             anyone who can write to `{}` could have put it there; nothing was changed. \
             If you know where it comes from, restore it with --allow-plaintext",
            remote.name,
            site.config_path.display(),
            store.url
        );
    }
    let dir = site.backups_dir;
    if let Ok(local) = backups::resolve(dir, &env.name, &remote.name)
        && local.status == Status::Verified
        && local
            .manifest
            .as_ref()
            .is_some_and(|m| m.blake3 == manifest.plaintext.blake3)
    {
        return Ok(Fetched {
            resumed: 0,
            name: remote.name.clone(),
            downloaded: false,
            verified: None,
        });
    }
    let identities = match (manifest.encrypted, opening.identity) {
        (false, _) => None,
        (true, Some(path)) => Some(crypt::Identities::load(path)?),
        (true, None) => {
            return Err(bad_input(format!(
                "off-site backup `{}` is encrypted: give its age identity with --identity FILE \
                 (or UPKEEP_AGE_IDENTITY); nothing was changed",
                remote.name
            )));
        }
    };
    fsx::create_private_dir(dir)?;
    fsx::sweep_partials(dir);
    let free = fsx::free_space(dir)?;
    if free < manifest.plaintext.size {
        bail!(
            "not enough space in `{}` for `{}`: it needs {}, {} is free; nothing was changed",
            dir.display(),
            remote.name,
            fsx::human_size(manifest.plaintext.size),
            fsx::human_size(free)
        );
    }
    let mut partial = fsx::partial_file(dir)?;
    let (written, object_hash, plain_hash) = download(
        &store,
        &remote.name,
        &manifest.object.key,
        identities.as_ref(),
        partial.as_file_mut(),
        dir,
        progress,
    )?;
    if object_hash.to_hex().as_str() != manifest.object.blake3 {
        bail!(
            "off-site backup `{}` does not match its manifest (the object's hash differs): not used, nothing was changed",
            remote.name
        );
    }
    if written != manifest.plaintext.size
        || plain_hash.to_hex().as_str() != manifest.plaintext.blake3
        || manifest.local.size != written
    {
        bail!(
            "off-site backup `{}` does not match its manifest once decrypted: not used, nothing was changed",
            remote.name
        );
    }
    partial
        .as_file()
        .sync_all()
        .with_context(|| format!("cannot write into `{}`", dir.display()))?;
    // Verified under its temporary name: dropped on failure, it never
    // stands in the folder as a backup.
    let download = Backup {
        name: remote.name.clone(),
        path: partial.path().to_path_buf(),
        stamp: remote.stamp.clone(),
        time: remote.time.clone(),
        size: written,
        status: Status::Verified,
        manifest: Some(manifest.local.clone()),
        kept_by: Vec::new(),
    };
    let hash = restore::verify(&download, schema)
        .map_err(|reason| {
            anyhow::anyhow!(
                "off-site backup `{}` matches its manifest but does not verify: {reason}; \
                 the download was removed, nothing was changed",
                remote.name
            )
        })?
        .hash;
    let path = dir.join(&remote.name);
    if path.exists() {
        // A local file of that name that is not this backup: keep it.
        let aside = fsx::with_suffix(
            &path,
            &format!(".before-offsite-{}", jiff::Timestamp::now().as_second()),
        );
        fsx::rename_synced(&path, &aside)?;
    }
    backups::publish(partial, &path, &manifest.local)?;
    Ok(Fetched {
        resumed: 0,
        name: remote.name.clone(),
        downloaded: true,
        verified: Some(Verified {
            backup: backups::resolve(dir, &env.name, &remote.name)?,
            hash,
        }),
    })
}

/// Downloads an object into `file` (decrypted with `identities` when it is
/// encrypted): this thread downloads and decrypts, another hashes and
/// writes. Returns the bytes written, the object's hash and the
/// plaintext's (the same when it is not encrypted: hashed once).
fn download(
    store: &Store,
    name: &str,
    key: &str,
    identities: Option<&crypt::Identities>,
    file: &mut std::fs::File,
    dir: &Path,
    progress: &Progress,
) -> Result<(u64, blake3::Hash, blake3::Hash)> {
    let (size, mut reader) = store.reader(key)?;
    let bar = progress.bytes(&format!("download {name}"), size);
    let mut object_hash = blake3::Hasher::new();
    let (written, plain_hash) = std::thread::scope(|scope| {
        let (send, chunks) = std::sync::mpsc::sync_channel::<bytes::Bytes>(2);
        let writer = scope.spawn(move || -> Result<blake3::Hash> {
            let mut hasher = blake3::Hasher::new();
            let mut at = 0u64;
            for chunk in chunks {
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .with_context(|| format!("cannot write into `{}`", dir.display()))?;
                // Written back as it comes: the final sync has little left.
                fsx::start_writeback(file, at, chunk.len() as u64);
                at += chunk.len() as u64;
            }
            Ok(hasher.finalize())
        });
        let failed = || format!("download of `{name}` from `{}` failed", store.url);
        let downloaded = (|| -> Result<u64> {
            let mut total = 0u64;
            let Some(identities) = identities else {
                // Plain: the ranges go to the writer as they came.
                while let Some(range) = reader.next_range().with_context(failed)? {
                    total += range.len() as u64;
                    bar.inc(range.len() as u64);
                    if send.send(range).is_err() {
                        break; // The writer stopped: its error says why.
                    }
                }
                return Ok(total);
            };
            let tee = Tee {
                inner: bar.wrap_read(reader),
                hasher: &mut object_hash,
            };
            let mut plain = identities.decrypt(tee, name)?;
            loop {
                let mut chunk = Vec::with_capacity(CHUNK);
                let n = (&mut plain)
                    .take(CHUNK as u64)
                    .read_to_end(&mut chunk)
                    .with_context(failed)?;
                if n == 0 || send.send(chunk.into()).is_err() {
                    return Ok(total);
                }
                total += n as u64;
            }
        })();
        drop(send);
        let hash = writer
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the writing thread panicked")));
        (downloaded, hash)
    });
    bar.finish_and_clear();
    let plain_hash = plain_hash?;
    let object_hash = match identities {
        Some(_) => object_hash.finalize(),
        None => plain_hash,
    };
    Ok((written?, object_hash, plain_hash))
}

/// A reader that hashes what passes through it.
struct Tee<'a, R> {
    inner: R,
    hasher: &'a mut blake3::Hasher,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.hasher.update(&out[..n]);
        Ok(n)
    }
}
