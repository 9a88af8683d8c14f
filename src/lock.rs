//! One upkeep at a time: a lock file in `state_dir`.
//!
//! The lock is a POSIX record lock (`fcntl(F_SETLK)`) on the whole file, not
//! a `flock`: the kernel releases it when the process dies, even by `kill
//! -9`, and, unlike a `flock`, it belongs to the process and is never
//! inherited. A `flock` is shared by every process holding the open file
//! description, so a child between `fork` and `exec` (or a `pre_exec` hook,
//! or a fork that never execs) would keep the lock of a killed upkeep alive,
//! and `upkeep recover` would be refused. With a record lock, what upkeep
//! starts never holds it. The price: a record lock is dropped as soon as
//! the process closes *any* descriptor of the file, so this module is the
//! only one to open it, once per process.
//!
//! The file also records who holds it, so that a second run can say whom it
//! is waiting for; the kernel says which process actually holds it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::error::Busy;
use crate::fsx;

/// Who holds the lock, written into the lock file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub what: String,
    pub since: String,
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Lock {
    file: File,
    pub path: PathBuf,
}

/// Whether this process holds the lock: opening the file a second time and
/// closing it would silently release it (record-lock semantics).
static HELD: AtomicBool = AtomicBool::new(false);

impl Drop for Lock {
    fn drop(&mut self) {
        HELD.store(false, Ordering::SeqCst);
    }
}

/// Takes the lock in `state_dir` for `what` (e.g. `backup production`), or
/// fails at once with [`Busy`] naming the holder.
pub fn acquire(state_dir: &Path, what: &str) -> Result<Lock> {
    if HELD.load(Ordering::SeqCst) {
        bail!("internal error: this upkeep already holds its lock (for `{what}`)");
    }
    fsx::create_private_dir(state_dir)?;
    let path = lock_path(state_dir);
    let mut file = fsx::open_lock_file(&path)?;
    if let Err(error) = set_lock(&file, libc::F_SETLK) {
        if matches!(error.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
            return Err(busy(&mut file, &path));
        }
        return Err(error).with_context(|| format!("cannot lock `{}`", path.display()));
    }
    HELD.store(true, Ordering::SeqCst);
    // From here on, dropping `lock` clears HELD, whatever fails below.
    let mut lock = Lock { file, path };
    let holder = Holder {
        pid: std::process::id(),
        host: hostname(),
        what: what.to_string(),
        since: jiff::Timestamp::now().to_string(),
    };
    // A lock file left by an older upkeep may be readable by all. Best
    // effort: one that another user owns cannot be changed, and still locks.
    fsx::make_private(&lock.path);
    lock.file.set_len(0)?;
    lock.file.rewind()?;
    lock.file
        .write_all(serde_json::to_string(&holder)?.as_bytes())?;
    lock.file.sync_all()?;
    wait_for_rounds(state_dir)?;
    Ok(lock)
}

/// How long a lock holder waits for a replicator's point in progress.
const ROUNDS_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Work that reads the database beside its app and must never overlap a
/// command that changes it (a replicator's point: `offsite::replicate`)
/// holds the shared side of `state_dir/rounds` while it runs, and starts
/// only when [`holder`] is no such command. Once a command holds the lock,
/// it waits here for the exclusive side, so for the work in progress to
/// end. From then on, any new work sees the lock held and waits.
fn wait_for_rounds(state_dir: &Path) -> Result<()> {
    let path = state_dir.join("rounds");
    let file = fsx::open_lock_file(&path)?;
    let until = std::time::Instant::now() + ROUNDS_WAIT;
    // SAFETY: a valid descriptor (flock: not the record lock of `lock`).
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        if std::time::Instant::now() >= until {
            bail!(Busy(format!(
                "a replicator has been taking a point of a database here for {}s (it holds `{}`): \
                 stop `upkeep replicate`, or try again",
                ROUNDS_WAIT.as_secs(),
                path.display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Dropping `file` releases it: the work may go on once it sees the lock.
    Ok(())
}

/// The shared side of `state_dir/rounds` (see [`wait_for_rounds`]), held
/// while the work runs.
pub struct Round {
    _shared: File,
}

/// Starts a round of work that must not overlap a command that changes
/// the database: `Ok(None)` while one holds the lock (see [`changes`]).
pub fn round(state_dir: &Path) -> Result<Option<Round>> {
    fsx::create_private_dir(state_dir)?;
    let path = state_dir.join("rounds");
    let file = fsx::open_lock_file(&path)?;
    // SAFETY: a valid descriptor. Blocks only while a lock holder checks
    // that no round is in progress (a moment).
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot lock `{}`", path.display()));
    }
    Ok(holder(state_dir)
        .filter(changes)
        .is_none()
        .then_some(Round { _shared: file }))
}

/// Who holds the lock in `state_dir` now, if anyone: what it recorded, or
/// only its PID when what it recorded is not its own (being written).
/// For processes that never take the lock (opening the file and closing
/// it would drop a lock this process held).
pub fn holder(state_dir: &Path) -> Option<Holder> {
    if HELD.load(Ordering::SeqCst) {
        return None;
    }
    let mut file = File::open(lock_path(state_dir)).ok()?;
    let pid = holder_pid(&file)?;
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match serde_json::from_str::<Holder>(&text) {
        Ok(holder) if holder.pid == pid => Some(holder),
        _ => Some(Holder {
            pid,
            host: hostname(),
            what: format!("process {pid}"),
            since: String::new(),
        }),
    }
}

/// Whether a holder of the lock may change a database: anything but a
/// backup or a push, which only read it.
pub fn changes(holder: &Holder) -> bool {
    !["upkeep backup ", "upkeep push "]
        .iter()
        .any(|reader| holder.what.starts_with(reader))
}

fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("lock")
}

/// A write lock on the whole file (`F_SETLK`), or asks who has one
/// (`F_GETLK`, which fills in the holder's PID).
fn set_lock(file: &File, command: libc::c_int) -> std::io::Result<libc::flock> {
    // SAFETY: `flock` is plain data, filled in below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: a valid descriptor and a valid pointer to a `flock`.
    if unsafe { libc::fcntl(file.as_raw_fd(), command, &mut lock) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lock)
}

/// The PID of the process that holds the lock on `file`, as the kernel sees it.
fn holder_pid(file: &File) -> Option<u32> {
    let lock = set_lock(file, libc::F_GETLK).ok()?;
    (lock.l_type != libc::F_UNLCK as libc::c_short && lock.l_pid > 0).then_some(lock.l_pid as u32)
}

fn busy(file: &mut File, path: &Path) -> anyhow::Error {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let recorded = serde_json::from_str::<Holder>(&text).ok();
    let pid = holder_pid(file);
    let holder = match (recorded, pid) {
        (Some(holder), Some(pid)) if holder.pid == pid => format!(
            "`{}` (PID {pid} on {}, since {})",
            holder.what, holder.host, holder.since
        ),
        (_, Some(pid)) => format!("process {pid}{}", crate::process::describe(pid)),
        (Some(holder), None) => format!(
            "`{}` (PID {} on {}, since {})",
            holder.what, holder.pid, holder.host, holder.since
        ),
        (None, None) => "another upkeep".to_string(),
    };
    anyhow::Error::new(Busy(format!(
        "{holder} holds the lock `{}`: wait for it to finish, then try again",
        path.display()
    )))
}

/// Whether the process holding the lock in `state_dir` is dying: killed
/// (a SIGKILL pending) or already a zombie. The kernel releases its lock in
/// a moment; `recover` waits for that rather than report busy.
pub fn holder_dying(state_dir: &Path) -> bool {
    // Closing a descriptor of the file would drop our own lock.
    if HELD.load(Ordering::SeqCst) {
        return false;
    }
    let Ok(file) = File::open(lock_path(state_dir)) else {
        return false;
    };
    let pid = holder_pid(&file);
    // Opened read-only only to ask: this process holds no lock on it.
    drop(file);
    let Some(pid) = pid else {
        // Released meanwhile: as good as dead.
        return true;
    };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    status.lines().any(|line| {
        let Some((key, value)) = line.split_once(':') else {
            return false;
        };
        let value = value.trim();
        match key {
            "State" => value.starts_with('Z') || value.starts_with('X'),
            "SigPnd" | "ShdPnd" => {
                u64::from_str_radix(value, 16).is_ok_and(|mask| mask & SIGKILL_BIT != 0)
            }
            _ => false,
        }
    })
}

/// This machine's name, for messages.
pub fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // when the name fits.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return "unknown host".to_string();
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}
