//! Printing what the off-site commands did: push, `backups --offsite`,
//! `verify`, and the download of `restore --offsite`.

use console::style;
use serde_json::json;

use super::Printer;
use crate::db::backups::Finding;
use crate::fsx::human_size;
use crate::offsite::points::Span;
use crate::offsite::replicate::Shipment;
use crate::offsite::{Fetched, Pushed, Remote};

impl Printer {
    pub fn pushed(&self, env: &str, pushed: &Pushed) {
        let changed =
            !pushed.uploaded.is_empty() || !pushed.deleted.is_empty() || !pushed.cleaned.is_empty();
        self.json(json!({
            "type": "push",
            "env": env,
            "url": pushed.url,
            "encrypted": pushed.encrypted,
            "uploaded": pushed.uploaded.iter().map(|(name, size)| json!({"name": name, "size": size})).collect::<Vec<_>>(),
            "already": pushed.already,
            "deleted": pushed.deleted,
            "cleaned": pushed.cleaned,
            "changed": changed,
        }));
        if !self.human() {
            return;
        }
        for cleaned in &pushed.cleaned {
            say!(
                "{}: removed {cleaned} from {}",
                style(env).bold(),
                pushed.url
            );
        }
        let lock = if pushed.encrypted { " (encrypted)" } else { "" };
        for (name, size) in &pushed.uploaded {
            say!(
                "{}: pushed {name} to {}{lock}, {} uploaded and checked",
                style(env).bold(),
                pushed.url,
                human_size(*size)
            );
        }
        for name in &pushed.already {
            say!(
                "{}: {name} is already at {}: nothing sent",
                style(env).bold(),
                pushed.url
            );
        }
        if !pushed.deleted.is_empty() {
            say!(
                "{}: off-site retention deleted {}",
                style(env).bold(),
                pushed.deleted.join(", ")
            );
        }
    }

    pub fn remote_backups(&self, env: &str, remotes: &[Remote]) {
        self.json(json!({"type": "backups", "env": env, "offsite": true, "backups": remotes}));
        if !self.human() {
            return;
        }
        if remotes.is_empty() {
            say!("{}: no backups off-site", style(env).bold());
            return;
        }
        let width = remotes.iter().map(|r| r.name.len()).max().unwrap_or(4);
        say!(
            "{:width$}  {:23}  {:>10}  {:9}  {:10}  kept by",
            "name",
            "time",
            "size",
            "encrypted",
            "status"
        );
        for remote in remotes.iter().rev() {
            let status = match remote.ok() {
                true => style(remote.status.clone()).green(),
                false => style(remote.status.clone()).red(),
            };
            say!(
                "{:width$}  {:23}  {:>10}  {:9}  {status:10}  {}",
                remote.name,
                remote.time,
                human_size(remote.size),
                if remote.encrypted { "yes" } else { "no" },
                kept_by(&remote.kept_by)
            );
        }
    }

    pub fn findings(&self, env: &str, offsite: bool, findings: &[Finding]) {
        self.json(json!({
            "type": "verify",
            "env": env,
            "offsite": offsite,
            "ok": findings.iter().all(|f| f.ok),
            "backups": findings,
        }));
        if !self.human() {
            return;
        }
        let place = if offsite { " off-site" } else { "" };
        if findings.is_empty() {
            say!("{}: no backups{place}", style(env).bold());
            return;
        }
        for finding in findings {
            let mark = match finding.ok {
                true => style("ok").green(),
                false => style("FAILED").red().bold(),
            };
            say!(
                "{}: {mark} {}: {}",
                style(env).bold(),
                finding.name,
                finding.detail
            );
        }
    }

    /// The continuous copies' moments, after `backups --offsite`.
    pub fn continuous(&self, env: &str, span: Option<&Span>) {
        self.json(json!({"type": "continuous", "env": env, "span": span}));
        if let Some(span) = span {
            say!(
                "{}: continuous copies ({} point(s)): restorable to any moment from {} to {} \
                 (`upkeep restore {env} --offsite --at TIME`)",
                style(env).bold(),
                span.points,
                span.from,
                span.to
            );
            if !span.older.is_empty() {
                say!(
                    "{}: and to the moments of {} older point(s) kept by retention: {}",
                    style(env).bold(),
                    span.older.len(),
                    span.older.join(", ")
                );
            }
        }
    }

    /// One round of `upkeep replicate` that shipped something.
    pub fn shipment(&self, env: &str, shipment: &Shipment) {
        let mut value = serde_json::to_value(shipment).unwrap_or_default();
        value["type"] = json!("replicate");
        value["env"] = json!(env);
        value["at"] = json!(jiff::Timestamp::now().to_string());
        self.json(value);
        let env = style(env).bold();
        self.note(&match shipment {
            Shipment::Point {
                why,
                blocks,
                new_blocks,
                bytes,
                puts,
                ..
            } => format!(
                "{env}: new point ({why}): {new_blocks} of {blocks} blocks sent ({}), {puts} request(s)",
                human_size(*bytes)
            ),
            Shipment::Segment {
                commits,
                bytes,
                puts,
                ..
            } => format!(
                "{env}: {commits} commit(s) shipped ({}), {puts} request(s)",
                human_size(*bytes)
            ),
            Shipment::Retry { why } => format!("{env}: {why}; trying again next round"),
            Shipment::Paused { why } => {
                format!("{env}: paused ({why}); a new point once it ends")
            }
            Shipment::Pruned(pruned) if pruned.is_empty() => {
                format!("{env}: retention applied: nothing to delete")
            }
            Shipment::Pruned(pruned) => format!(
                "{env}: retention applied: {} point(s), {} segment(s) and {} pack(s) ({}) deleted",
                pruned.points.len(),
                pruned.segments,
                pruned.packs,
                human_size(pruned.bytes)
            ),
        });
    }

    pub fn fetched(&self, env: &str, fetched: &Fetched) {
        let Fetched {
            name,
            downloaded,
            resumed,
            ..
        } = fetched;
        self.json(json!({"type": "fetch", "env": env, "backup": name, "downloaded": downloaded, "resumed": resumed}));
        let resumed = match *resumed {
            0 => String::new(),
            blocks => format!(" (resumed: {blocks} blocks were fetched by an interrupted restore)"),
        };
        match *downloaded {
            true => self.note(&format!(
                "{}: downloaded {name} from off-site{resumed}, checked against its manifest and verified; kept as a local backup",
                style(env).bold()
            )),
            false => self.note(&format!(
                "{}: {name} is already here and verified: not downloaded",
                style(env).bold()
            )),
        }
    }
}

/// The rules that keep a backup, for the listings: `-` when none does
/// (the next rotation deletes it).
pub(super) fn kept_by(reasons: &[&str]) -> String {
    match reasons.is_empty() {
        true => "-".to_string(),
        false => reasons.join(", "),
    }
}
