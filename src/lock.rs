//! One upkeep at a time: a lock file in `state_dir`.
//!
//! The lock is an OS file lock (`flock` through `File::try_lock`), so the
//! kernel releases it when the process dies, even by `kill -9`: a stale lock
//! can't block the next run. The file also records who holds it, so that a
//! second run can say whom it is waiting for.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
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
    _file: File,
    pub path: PathBuf,
}

/// Takes the lock in `state_dir` for `what` (e.g. `backup production`), or
/// fails at once with [`Busy`] naming the holder.
pub fn acquire(state_dir: &Path, what: &str) -> Result<Lock> {
    fsx::create_private_dir(state_dir)?;
    let path = state_dir.join("lock");
    let mut file = fsx::private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open lock file `{}`", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = serde_json::from_str::<Holder>(&text).map_or_else(
                |_| "another upkeep".to_string(),
                |holder| {
                    format!(
                        "`{}` (PID {} on {}, since {})",
                        holder.what, holder.pid, holder.host, holder.since
                    )
                },
            );
            return Err(anyhow::Error::new(Busy(format!(
                "{holder} holds the lock `{}`: wait for it to finish, then try again",
                path.display()
            ))));
        }
        Err(TryLockError::Error(error)) => {
            return Err(error).with_context(|| format!("cannot lock `{}`", path.display()));
        }
    }
    let holder = Holder {
        pid: std::process::id(),
        host: hostname(),
        what: what.to_string(),
        since: jiff::Timestamp::now().to_string(),
    };
    // A lock file left by an older upkeep may be readable by all. Best
    // effort: one that another user owns cannot be changed, and still locks.
    fsx::make_private(&path);
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(serde_json::to_string(&holder)?.as_bytes())?;
    file.sync_all()?;
    Ok(Lock { _file: file, path })
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
