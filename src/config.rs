//! The project configuration, `upkeep.yaml`.
//!
//! Found in the current directory or a parent, or named by `--config` /
//! `UPKEEP_CONFIG`. Paths in it are relative to its own folder, so the same
//! file works from cron (whose working directory is `$HOME`) and by hand.
//! Every value is checked while the YAML is read, so that a bad one is
//! reported with the file, line and column it came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::db::live;
use crate::db::retention::{Policy, Rotation};
use crate::db::{Env, StorageVersion};
use crate::error::bad_input;
use crate::offsite;
use crate::probe::Probe;
use crate::yaml;

/// The file name looked for in the current directory and its parents.
pub const FILE_NAME: &str = "upkeep.yaml";
const DEFAULT_KEEP: u32 = 30;

/// A loaded, checked `upkeep.yaml` with every path made absolute.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file itself.
    pub path: PathBuf,
    /// The folder the config file is in; relative paths start here.
    pub root: PathBuf,
    pub databases: BTreeMap<String, PathBuf>,
    pub backups_dir: PathBuf,
    /// What rotation keeps: `backups.keep` or `backups.retention`.
    pub rotation: Rotation,
    /// `backups.offsite`: where verified backups are copied.
    pub offsite: Option<offsite::Spec>,
    /// `backups.live`: when a running app's database is copied live.
    pub live: live::Policy,
    /// `backups.ways`: the ways tried, in order, to back up a database
    /// that a running app holds.
    pub ways: Vec<Way>,
    pub schema: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// The storage version to write new database files in, when set.
    pub storage_version: Option<StorageVersion>,
    /// How to stop, start, probe and snapshot the app of each environment
    /// (`app:`); environments without one are absent.
    pub apps: BTreeMap<String, AppSpec>,
    /// `app.notify`: a webhook told when an app that upkeep stopped does
    /// not come back (a window backup run as a command, e.g. from cron).
    pub app_notify: Option<String>,
}

/// How to stop, start, probe and snapshot the app serving one environment.
/// Commands run through `/bin/sh` in the config's folder, with `UPKEEP_ENV`
/// and `UPKEEP_DB` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    pub stop: String,
    pub start: String,
    /// Waited for after `start`; without it, start-app only runs `start`.
    pub health: Option<HealthSpec>,
    /// Writes a consistent copy of the database to `$UPKEEP_SNAPSHOT`.
    pub snapshot: Option<String>,
    /// How long each of `stop`, `start` and `snapshot` may run
    /// (`hook_timeout`); past it, its process group is stopped.
    pub hook_timeout: std::time::Duration,
}

/// `app.hook_timeout` when not set: a snapshot of a large database may
/// take minutes; a hook that hangs must not hold an update for longer.
pub const DEFAULT_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// How to tell that the app is up: exactly one of `url` (HTTP 2xx), `tcp`
/// (`host:port` accepts a connection) or `cmd` (exits 0), within `timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    pub url: Option<String>,
    pub tcp: Option<String>,
    pub cmd: Option<String>,
    #[serde(default = "default_health_timeout", with = "humantime_serde_shim")]
    pub timeout: std::time::Duration,
}

fn default_health_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

/// `timeout: 60s` read with humantime, so a bad one is reported where it is.
mod humantime_serde_shim {
    use serde::Deserialize;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<std::time::Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_timeout(&text).map_err(serde::de::Error::custom)
    }

    pub fn option<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<std::time::Duration>, D::Error> {
        deserialize(deserializer).map(Some)
    }
}

/// A timeout of upkeep.yaml (`60s`, `2m`): a duration, and not zero (no
/// command or probe can pass in no time).
fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err(format!(
            "`{text}` leaves no time at all: write e.g. `60s` or `2m`"
        )),
        Ok(duration) => Ok(duration),
        Err(error) => Err(format!(
            "`{text}` is not a duration ({error}): write e.g. `60s` or `2m`"
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    databases: Databases,
    #[serde(default)]
    backups: RawBackups,
    #[serde(default, deserialize_with = "given")]
    schema: Option<SchemaPath>,
    #[serde(default, deserialize_with = "given")]
    state_dir: Option<FolderPath>,
    storage_version: Option<StorageVersion>,
    app: Option<RawApp>,
}

/// `app:`: the keys for every environment, and `environments:` with what
/// differs for some (production and staging served by two processes).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    stop: Option<String>,
    start: Option<String>,
    health: Option<HealthSpec>,
    snapshot: Option<String>,
    #[serde(default, deserialize_with = "humantime_serde_shim::option")]
    hook_timeout: Option<std::time::Duration>,
    notify: Option<String>,
    #[serde(default)]
    environments: BTreeMap<EnvName, RawAppKeys>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawAppKeys {
    stop: Option<String>,
    start: Option<String>,
    health: Option<HealthSpec>,
    snapshot: Option<String>,
    #[serde(default, deserialize_with = "humantime_serde_shim::option")]
    hook_timeout: Option<std::time::Duration>,
}

impl RawApp {
    /// The keys for `env`: its `environments:` entry over the common ones.
    fn keys_for(&self, over: Option<&RawAppKeys>) -> RawAppKeys {
        let over = over.cloned().unwrap_or_default();
        RawAppKeys {
            stop: over.stop.or_else(|| self.stop.clone()),
            start: over.start.or_else(|| self.start.clone()),
            health: over.health.or_else(|| self.health.clone()),
            snapshot: over.snapshot.or_else(|| self.snapshot.clone()),
            hook_timeout: over.hook_timeout.or(self.hook_timeout),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackups {
    #[serde(default, deserialize_with = "given")]
    dir: Option<FolderPath>,
    keep: Option<Keep>,
    retention: Option<Policy>,
    offsite: Option<RawOffsite>,
    #[serde(default)]
    live: live::Policy,
    #[serde(default)]
    ways: Ways,
}

/// A way to back up a database that a running app holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Way {
    /// A live copy (`backups.live` says when).
    Live,
    /// The app's `snapshot` hook.
    Hook,
    /// The app stopped for the copy only.
    Window,
}

impl Way {
    pub fn as_str(self) -> &'static str {
        match self {
            Way::Live => "live",
            Way::Hook => "hook",
            Way::Window => "window",
        }
    }
}

/// `backups.ways`: at least one way, each at most once.
#[derive(Deserialize)]
#[serde(try_from = "Vec<Way>")]
struct Ways(Vec<Way>);

impl Default for Ways {
    fn default() -> Self {
        Ways(vec![Way::Live, Way::Hook, Way::Window])
    }
}

impl TryFrom<Vec<Way>> for Ways {
    type Error = String;

    fn try_from(ways: Vec<Way>) -> Result<Self, String> {
        if ways.is_empty() {
            return Err(
                "`backups.ways` is empty: list at least one of live, hook, window".to_string(),
            );
        }
        for (index, way) in ways.iter().enumerate() {
            if ways[..index].contains(way) {
                return Err(format!(
                    "`backups.ways` names `{}` twice: list each way once",
                    way.as_str()
                ));
            }
        }
        Ok(Ways(ways))
    }
}

/// `backups.offsite`. Credentials are never read from here: see
/// `offsite::target`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffsite {
    url: String,
    endpoint: Option<String>,
    region: Option<String>,
    encrypt_to: Option<Vec<String>>,
    retention: Option<Policy>,
    continuous: Option<RawContinuous>,
}

/// `backups.offsite.continuous`: durations, humantime's (`1s`, `15m`, `48h`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContinuous {
    #[serde(default, deserialize_with = "humantime_serde_shim::option")]
    interval: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "humantime_serde_shim::option")]
    point_every: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "humantime_serde_shim::option")]
    wal_retention: Option<std::time::Duration>,
}

/// `databases:`, environment name -> database file: at least one.
#[derive(Deserialize)]
#[serde(try_from = "BTreeMap<EnvName, DbPath>")]
struct Databases(BTreeMap<EnvName, DbPath>);

impl TryFrom<BTreeMap<EnvName, DbPath>> for Databases {
    type Error = String;

    fn try_from(databases: BTreeMap<EnvName, DbPath>) -> Result<Self, String> {
        if databases.is_empty() {
            return Err(
                "`databases` names no environment: name at least one, e.g. `production: data.duckdb`"
                    .to_string(),
            );
        }
        Ok(Databases(databases))
    }
}

/// A database file's path.
#[derive(Deserialize)]
#[serde(try_from = "Option<String>")]
struct DbPath(PathBuf);

impl TryFrom<Option<String>> for DbPath {
    type Error = String;

    fn try_from(text: Option<String>) -> Result<Self, String> {
        checked_path(text, PathKind::Database).map(DbPath)
    }
}

/// The path of `schema.sql`.
#[derive(Deserialize)]
#[serde(try_from = "Option<String>")]
struct SchemaPath(PathBuf);

impl TryFrom<Option<String>> for SchemaPath {
    type Error = String;

    fn try_from(text: Option<String>) -> Result<Self, String> {
        checked_path(text, PathKind::Schema).map(SchemaPath)
    }
}

/// A folder's path (`backups.dir`, `state_dir`).
#[derive(Deserialize)]
#[serde(try_from = "Option<String>")]
struct FolderPath(PathBuf);

impl TryFrom<Option<String>> for FolderPath {
    type Error = String;

    fn try_from(text: Option<String>) -> Result<Self, String> {
        checked_path(text, PathKind::Folder).map(FolderPath)
    }
}

/// serde gives `None` for a null value of an `Option` field before the
/// value's own checks see it: an optional path goes through this instead,
/// so that a key left empty is refused, not taken as "not set".
fn given<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// What a path in upkeep.yaml names.
#[derive(Clone, Copy)]
enum PathKind {
    Database,
    Schema,
    Folder,
}

impl PathKind {
    fn what_to_do(self) -> &'static str {
        match self {
            PathKind::Database => {
                "write the database file's path, relative to the folder of upkeep.yaml"
            }
            PathKind::Schema => {
                "write the path of the schema file (relative to the folder of upkeep.yaml), or remove the key"
            }
            PathKind::Folder => {
                "write a folder's path (relative to the folder of upkeep.yaml), or remove the key to use the default"
            }
        }
    }
}

/// A path as written in upkeep.yaml. Nothing (null, empty, blank) would
/// name the config's own folder, and `~` is not expanded (it would name a
/// folder called `~`): both are refused, and so is a file's path that can
/// only name a folder (`data/`, `.`, `..`).
fn checked_path(text: Option<String>, kind: PathKind) -> Result<PathBuf, String> {
    let text = text.unwrap_or_default();
    if text.trim().is_empty() {
        return Err(format!(
            "no path given (null or empty): {}",
            kind.what_to_do()
        ));
    }
    if text.starts_with('~') {
        return Err(format!(
            "`{text}`: `~` is not expanded in upkeep.yaml; write the full path, or one relative to the folder of upkeep.yaml"
        ));
    }
    if text.contains('\0') {
        return Err("a path cannot hold a NUL character".to_string());
    }
    let path = PathBuf::from(&text);
    let folder = path.file_name().is_none() || text.ends_with('/') || text.ends_with("/.");
    if folder && !matches!(kind, PathKind::Folder) {
        return Err(format!("`{text}` names a folder: {}", kind.what_to_do()));
    }
    Ok(path)
}

/// An environment name: it becomes part of backup file names, so it is kept
/// to letters, digits, `-` and `_` (not first); `both` and `all` are
/// reserved words.
#[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(try_from = "String")]
struct EnvName(String);

impl TryFrom<String> for EnvName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        if name == "both" || name == "all" {
            return Err(format!(
                "`{name}` is a reserved word (it selects several environments); pick another environment name"
            ));
        }
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(format!(
                "environment name `{name}` must be letters, digits, `-` or `_` (it is part of backup file names)"
            ));
        }
        // Names go on command lines (`upkeep backup NAME`, the schedule's
        // entry), where a leading `-` reads as an option.
        if name.starts_with('-') {
            return Err(format!(
                "environment name `{name}` must not start with `-`: on a command line it would read as an option"
            ));
        }
        Ok(EnvName(name))
    }
}

/// How many backups rotation keeps: at least one.
#[derive(Deserialize)]
#[serde(try_from = "i64")]
struct Keep(u32);

impl TryFrom<i64> for Keep {
    type Error = String;

    fn try_from(keep: i64) -> Result<Self, String> {
        parse_keep(keep).map(Keep)
    }
}

/// Checks a `keep` count, from the config or from `--keep`. The message
/// follows the name the caller gives it (`--keep`, `` `backups.keep` ``).
pub fn parse_keep(keep: i64) -> Result<u32, String> {
    match u32::try_from(keep) {
        Ok(keep) if keep >= 1 => Ok(keep),
        _ => Err(format!(
            "must be a whole number of at least 1, not {keep}: rotation never deletes every backup"
        )),
    }
}

impl Config {
    /// Finds and loads the config: `explicit` if given, else `upkeep.yaml` in
    /// `cwd` or the nearest parent that has one.
    pub fn discover(explicit: Option<&Path>, cwd: &Path) -> Result<Config> {
        let path = match explicit {
            Some(path) => cwd.join(path),
            None => cwd
                .ancestors()
                .map(|dir| dir.join(FILE_NAME))
                .find(|candidate| candidate.is_file())
                .ok_or_else(|| {
                    bad_input(format!(
                        "no {FILE_NAME} in `{}` or any parent folder: create one (see docs/configuration.md) or pass --config PATH",
                        cwd.display()
                    ))
                })?,
        };
        Config::load(&path)
    }

    /// Loads and checks one config file.
    pub fn load(path: &Path) -> Result<Config> {
        let bytes = std::fs::read(path).map_err(|error| {
            bad_input(format!(
                "cannot read config `{}`: {error}; check the path given by --config or UPKEEP_CONFIG",
                path.display()
            ))
        })?;
        Config::parse(path, &bytes)
    }

    /// Checks the bytes of a config file that is (or would be) at `path`:
    /// messages name it, and relative paths start at its folder. Every
    /// error is bad input, with the line and column it is at.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Config> {
        let path = std::path::absolute(path)
            .with_context(|| format!("cannot resolve config path `{}`", path.display()))?;
        let root = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let at = |pos: yaml::Pos, message: &str| {
            bad_input(format!("{}:{pos}: {message}", path.display()))
        };
        let text = yaml::decode(bytes).map_err(|error| at(error.pos, &error.message))?;
        // Where each key of `app:` is, for what is checked of it as a whole;
        // and each key of `backups.offsite`: what is wrong with them
        // together (or with the environment they bring in) is found after
        // serde, and said at the key it is about.
        let mut places = Places::new();
        let mut offsite_keys = BTreeMap::new();
        let outline = yaml::outline(text, &mut |scalar| {
            let under_app = scalar.keys.first().map(String::as_str) == Some("app")
                || scalar.keys.is_empty() && scalar.text == "app";
            if scalar.is_key && under_app {
                let dotted = [scalar.keys, &[scalar.text.to_string()]].concat().join(".");
                places.entry(dotted).or_insert(scalar.pos);
            }
            if scalar.is_key && scalar.keys == ["backups", "offsite"] {
                offsite_keys
                    .entry(scalar.text.to_string())
                    .or_insert(scalar.pos);
            }
            if scalar.is_key && scalar.keys == ["backups"] && scalar.text == "offsite" {
                offsite_keys.entry(String::new()).or_insert(scalar.pos);
            }
            check_scalar(scalar)
        })
        .map_err(|error| at(error.pos, &error.message))?;
        if outline.empty {
            return Err(at(
                yaml::Pos::START,
                "the file is empty: it needs at least `databases:`, e.g. `databases: { production: data.duckdb }`",
            ));
        }
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|error| {
            // serde places a few errors nowhere: aliases that expand too far
            // (the first alias is where to look), or the whole file.
            let (pos, message) = located(&error);
            at(
                pos.or(outline.first_alias).unwrap_or(yaml::Pos::START),
                &message,
            )
        })?;
        let apps = match &raw.app {
            Some(app) => apps(
                &path,
                app,
                raw.databases.0.keys().map(|name| name.0.as_str()),
                &places,
            )?,
            None => BTreeMap::new(),
        };
        let resolve = |relative: &Path| root.join(relative);
        let folder = |raw: Option<FolderPath>, default: &str| {
            resolve(raw.as_ref().map_or(Path::new(default), |path| &path.0))
        };
        let in_file = |message: String| bad_input(format!("{}: {message}", path.display()));
        let rotation = match (raw.backups.keep, raw.backups.retention) {
            (Some(_), Some(_)) => {
                return Err(in_file(
                    "`backups` has both `keep` and `retention`: keep one (retention: { last: 3, daily: 7, ... } \
                     replaces keep: N)"
                        .to_string(),
                ));
            }
            (_, Some(policy)) => {
                policy
                    .check()
                    .map_err(|message| in_file(format!("`backups.retention`: {message}")))?;
                Rotation::Calendar(policy)
            }
            (keep, None) => Rotation::Newest(keep.map_or(DEFAULT_KEEP, |keep| keep.0)),
        };
        let offsite = match raw.backups.offsite {
            Some(raw) => Some(offsite_spec(raw).map_err(|(key, message)| {
                // The key, else `url`, else `offsite`; the start of the file
                // when YAML readers disagree on where lines break (U+2029).
                let pos = [key, "url", ""]
                    .iter()
                    .find_map(|key| offsite_keys.get(*key))
                    .copied()
                    .unwrap_or(yaml::Pos::START);
                at(pos, &message)
            })?),
            None => None,
        };
        let app_notify = raw.app.as_ref().and_then(|app| app.notify.clone());
        if let Some(url) = &app_notify {
            crate::webhook::check_url(url).map_err(|message| {
                let pos = places
                    .get("app.notify")
                    .copied()
                    .unwrap_or(yaml::Pos::START);
                at(pos, &format!("`app.notify`: {message}"))
            })?;
        }
        Ok(Config {
            apps,
            app_notify,
            databases: raw
                .databases
                .0
                .into_iter()
                .map(|(name, db)| (name.0, resolve(&db.0)))
                .collect(),
            backups_dir: folder(raw.backups.dir, "backups"),
            rotation,
            offsite,
            live: raw.backups.live,
            ways: raw.backups.ways.0,
            schema: raw.schema.map(|schema| resolve(&schema.0)),
            state_dir: folder(raw.state_dir, ".upkeep"),
            storage_version: raw.storage_version,
            path,
            root,
        })
    }

    /// The environments an ENV argument selects: one name, `both`
    /// (production and staging) or `all`.
    pub fn select(&self, selector: &str) -> Result<Vec<Env>> {
        match selector {
            "all" => Ok(self
                .databases
                .keys()
                .map(|name| self.env(name))
                .collect::<Result<_>>()?),
            "both" => ["production", "staging"]
                .iter()
                .map(|name| self.env(name))
                .collect(),
            name => Ok(vec![self.env(name)?]),
        }
    }

    /// Where off-site copies go (`backups.offsite`), with the folders they
    /// are made from; an error saying how to configure it when there is
    /// none.
    pub fn offsite(&self) -> Result<offsite::Site<'_>> {
        let spec = self.offsite.as_ref().ok_or_else(|| {
            bad_input(format!(
                "no `backups.offsite` in `{}`: add one (url: s3://BUCKET/PREFIX or file:///FOLDER) to copy backups off-site",
                self.path.display()
            ))
        })?;
        Ok(offsite::Site {
            spec,
            config_path: &self.path,
            root: &self.root,
            backups_dir: &self.backups_dir,
            state_dir: &self.state_dir,
            rotation: spec
                .retention
                .clone()
                .map_or_else(|| self.rotation.clone(), Rotation::Calendar),
        })
    }

    /// One environment by name; an unknown name lists the known ones.
    pub fn env(&self, name: &str) -> Result<Env> {
        match self.databases.get(name) {
            Some(db) => Ok(Env {
                name: name.to_string(),
                db: db.clone(),
            }),
            None => Err(bad_input(format!(
                "unknown environment `{name}` in {}: known environments are {} (or `both`, `all`)",
                self.path.display(),
                self.databases
                    .keys()
                    .map(|known| format!("`{known}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// Where keys are in upkeep.yaml, by dotted path (`app.environments.staging.health`).
type Places = BTreeMap<String, yaml::Pos>;

/// Each environment's app, from `app:` and its `environments:` overrides,
/// checked as a whole: each value was checked where it is (by
/// [`check_scalar`]), but one that came through an alias only here, at
/// its key's line.
fn apps<'a>(
    path: &Path,
    app: &RawApp,
    envs: impl Iterator<Item = &'a str>,
    places: &Places,
) -> Result<BTreeMap<String, AppSpec>> {
    let place = |dotted: &str| {
        places
            .get(dotted)
            .or_else(|| places.get("app"))
            .copied()
            .unwrap_or(yaml::Pos::START)
    };
    let envs: Vec<&str> = envs.collect();
    if let Some(unknown) = app
        .environments
        .keys()
        .find(|name| !envs.contains(&name.0.as_str()))
    {
        let dotted = format!("app.environments.{}", unknown.0);
        return Err(bad_input(format!(
            "{}:{}: `{dotted}` names no environment of `databases:`",
            path.display(),
            place(&dotted),
        )));
    }
    let mut apps = BTreeMap::new();
    for env in envs {
        let over = app
            .environments
            .iter()
            .find(|(name, _)| name.0 == env)
            .map(|(_, keys)| keys);
        let keys = app.keys_for(over);
        let where_ = if over.is_some() {
            format!("`app:` (with `app.environments.{env}`)")
        } else {
            "`app:`".to_string()
        };
        // Where `key` of this environment's app is written: its override,
        // else the common key, else `app:` itself.
        let key_place = |key: &str, overridden: bool| {
            let dotted = match overridden {
                true => format!("app.environments.{env}.{key}"),
                false => format!("app.{key}"),
            };
            let pos = place(&dotted);
            (format!("{}:{pos}", path.display()), dotted)
        };
        let (Some(stop), Some(start)) = (keys.stop.clone(), keys.start.clone()) else {
            let at = match over {
                Some(_) => place(&format!("app.environments.{env}")),
                None => place("app"),
            };
            return Err(bad_input(format!(
                "{}:{at}: {where_} needs both `stop` and `start` for environment `{env}`: the commands that stop and start the app",
                path.display()
            )));
        };
        let over = over.cloned().unwrap_or_default();
        for (key, command, overridden) in [
            ("stop", Some(&stop), over.stop.is_some()),
            ("start", Some(&start), over.start.is_some()),
            ("snapshot", keys.snapshot.as_ref(), over.snapshot.is_some()),
        ] {
            if let Some(Err(message)) =
                command.map(|command| crate::process::check_command(command))
            {
                let (at, dotted) = key_place(key, overridden);
                return Err(bad_input(format!("{at}: `{dotted}`: {message}")));
            }
        }
        if let Some(health) = &keys.health
            && let Err(message) = Probe::of(
                health.url.as_deref(),
                health.tcp.as_deref(),
                health.cmd.as_deref(),
            )
        {
            let (at, dotted) = key_place("health", over.health.is_some());
            return Err(bad_input(format!(
                "{at}: `{dotted}` for environment `{env}`: {message}"
            )));
        }
        apps.insert(
            env.to_string(),
            AppSpec {
                stop,
                start,
                health: keys.health,
                snapshot: keys.snapshot,
                hook_timeout: keys.hook_timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT),
            },
        );
    }
    Ok(apps)
}

/// Checks `backups.offsite` as a whole (its values were checked where
/// they are, by [`check_scalar`]). An error comes with the key it is
/// about (`url` for the environment variables it brings in).
fn offsite_spec(raw: RawOffsite) -> Result<offsite::Spec, (&'static str, String)> {
    let key = match (&raw.endpoint, raw.url.starts_with("s3://")) {
        (Some(_), false) => "endpoint",
        _ => "url",
    };
    let target =
        offsite::target::Target::parse(&raw.url, raw.endpoint.as_deref(), raw.region.as_deref())
            .map_err(|message| (key, format!("`backups.offsite`: {message}")))?;
    if raw.encrypt_to.as_ref().is_some_and(Vec::is_empty) {
        return Err((
            "encrypt_to",
            "`backups.offsite.encrypt_to` is empty: give age1... public keys (or files of them), or remove the key"
                .to_string(),
        ));
    }
    if let Some(policy) = &raw.retention {
        policy.check().map_err(|message| {
            (
                "retention",
                format!("`backups.offsite.retention`: {message}"),
            )
        })?;
    }
    let defaults = offsite::replicate::Options::default();
    let continuous = match raw.continuous {
        None => defaults,
        Some(set) => offsite::replicate::Options {
            interval: set.interval.unwrap_or(defaults.interval),
            point_every: set.point_every.unwrap_or(defaults.point_every),
            wal_retention: set.wal_retention.unwrap_or(defaults.wal_retention),
        },
    };
    continuous.check().map_err(|message| {
        (
            "continuous",
            format!("`backups.offsite.continuous`: {message}"),
        )
    })?;
    Ok(offsite::Spec {
        target,
        encrypt_to: raw.encrypt_to,
        retention: raw.retention,
        continuous,
    })
}

/// Checks a value of upkeep.yaml where it is, so that an error points at
/// it: serde places the error of a value at the start of the mapping that
/// holds it. The same checks run again as serde reads the file (through
/// aliases, too).
fn check_scalar(scalar: &yaml::Scalar) -> Result<(), String> {
    let keys: Vec<&str> = scalar.keys.iter().map(String::as_str).collect();
    let text = (!scalar.is_null()).then(|| scalar.text.to_string());
    // An age identity is a secret wherever it is pasted (most likely in
    // `encrypt_to`): refused before serde could quote it in an error.
    if offsite::crypt::holds_identity(scalar.text) {
        return Err(match scalar.is_key {
            true => format!(
                "a key holds an age secret key: {}",
                offsite::crypt::IDENTITY_HINT
            ),
            false => format!(
                "`{}` holds an age secret key: {}",
                scalar.dotted(),
                offsite::crypt::IDENTITY_HINT
            ),
        });
    }
    let checked = match (keys.as_slice(), scalar.is_key) {
        // `<<` merges another mapping in: its keys are checked where they are.
        (["databases"], true) if scalar.text != "<<" => {
            EnvName::try_from(scalar.text.to_string()).map(drop)
        }
        (["databases", _], false) => DbPath::try_from(text).map(drop),
        (["schema"], false) => SchemaPath::try_from(text).map(drop),
        (["backups", "dir"] | ["state_dir"], false) => FolderPath::try_from(text).map(drop),
        (["backups", "keep"], false) if scalar.plain => match scalar.text.parse::<i64>() {
            Ok(keep) => parse_keep(keep).map(drop),
            Err(_) => Err(format!(
                "must be a whole number of at least 1, not `{}`",
                scalar.text
            )),
        },
        (
            ["app", "stop" | "start" | "snapshot"]
            | ["app", "environments", _, "stop" | "start" | "snapshot"],
            false,
        ) => crate::process::check_command(text.as_deref().unwrap_or_default()),
        (
            ["app", "health", probe @ ("url" | "tcp" | "cmd")]
            | [
                "app",
                "environments",
                _,
                "health",
                probe @ ("url" | "tcp" | "cmd"),
            ],
            false,
        ) => match text.as_deref() {
            None => Err(format!(
                "no value given (null): write the {}, or leave the key out",
                match *probe {
                    "url" => "URL (`http://127.0.0.1:PORT/health`)",
                    "tcp" => "address (`127.0.0.1:PORT`)",
                    _ => "shell command",
                }
            )),
            Some(value) => match *probe {
                "url" => Probe::url(value).map(drop),
                "tcp" => Probe::tcp(value).map(drop),
                _ => Probe::cmd(value).map(drop),
            },
        },
        (
            ["app", "health", "timeout"]
            | ["app", "environments", _, "health", "timeout"]
            | ["app", "hook_timeout"]
            | ["app", "environments", _, "hook_timeout"],
            false,
        ) => match text.as_deref() {
            None => Err(
                "no duration given (null): write e.g. `60s` or `2m`, or leave the key out"
                    .to_string(),
            ),
            Some(value) => parse_timeout(value).map(drop),
        },
        (["app", "notify"], false) if text.is_some() => {
            crate::webhook::check_url(text.as_deref().unwrap_or_default())
        }
        (["backups", "offsite", "url"], false) => {
            offsite::target::check_url(text.as_deref().unwrap_or_default())
        }
        (["backups", "offsite", "endpoint"], false) => {
            offsite::target::check_endpoint(text.as_deref().unwrap_or_default())
        }
        (["backups", "offsite", "region"], false) => {
            offsite::target::check_region(text.as_deref().unwrap_or_default())
        }
        (["backups", "offsite", "encrypt_to", _], false) if scalar.text.trim().is_empty() => {
            Err("an empty entry: give an age1... public key, or the file of one".to_string())
        }
        (["backups", "offsite"], true) if looks_like_a_credential(scalar.text) => Err(format!(
            "`backups.offsite.{}`: credentials are not read from upkeep.yaml; remove it and set \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment",
            scalar.text
        )),
        (["storage_version"], false) if text.is_some() => {
            StorageVersion::try_from(scalar.text.to_string()).map(drop)
        }
        _ => Ok(()),
    };
    checked.map_err(|message| match scalar.is_key {
        true => message,
        false => format!("`{}`: {message}", scalar.dotted()),
    })
}

/// Keys someone might write a credential under.
fn looks_like_a_credential(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "secret",
        "password",
        "token",
        "access_key",
        "key_id",
        "credential",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// A serde YAML error's position, if it has one, and its message without
/// the " at line L column C" the library appends (the caller puts the
/// position first, the form editors jump to).
fn located(error: &serde_yaml::Error) -> (Option<yaml::Pos>, String) {
    let message = error.to_string();
    match error.location() {
        Some(location) => {
            let suffix = format!(" at line {} column {}", location.line(), location.column());
            let message = message.strip_suffix(&suffix).unwrap_or(&message);
            let pos = yaml::Pos {
                line: location.line(),
                col: location.column(),
            };
            (Some(pos), message.to_string())
        }
        None => (None, message),
    }
}
