//! The words every layer that runs steps shares: what a step or a rollback
//! does ([`Action`]), how a step ended ([`Outcome`]), and what its undo
//! needs to know ([`Undo`]). The pipeline model, the step types, the
//! journal and the app's backup window all speak them; they live here,
//! below all of them, so that each looks down for them.

use serde::{Deserialize, Serialize};

/// Something a step or a rollback does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A shell command (`sh -c`).
    Shell { run: String },
    /// A built-in step type with its `with:` parameters.
    Builtin {
        uses: String,
        with: std::collections::BTreeMap<String, String>,
    },
}

impl Action {
    /// What the action does, for people; credentials in URLs are masked.
    pub fn describe(&self) -> String {
        let text = match self {
            Action::Shell { run } => format!("run `{run}`"),
            Action::Builtin { uses, with } if with.is_empty() => format!("uses {uses}"),
            Action::Builtin { uses, with } => format!(
                "uses {uses} with {}",
                with.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        crate::redact::urls(&text)
    }
}

/// How a step ended, as `when:` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// What a step did that its rollback needs to know, kept in the journal so
/// that `upkeep recover` can undo it after a crash. `null`: nothing to undo.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Undo(pub serde_json::Value);

impl Undo {
    pub fn nothing() -> Undo {
        Undo(serde_json::Value::Null)
    }

    pub fn is_nothing(&self) -> bool {
        self.0.is_null()
    }

    /// Marks that the run went on after the step (it finished, or failed
    /// and was allowed to): later steps may have changed what it changed.
    /// Set by the runner, journaled with the step's end; a type's undo may
    /// take it into account (migrate then keeps the migrated file aside).
    pub fn went_on(mut self) -> Undo {
        if let Some(object) = self.0.as_object_mut() {
            object.insert(WENT_ON.into(), serde_json::Value::Bool(true));
        }
        self
    }

    /// See [`Undo::went_on`].
    pub fn did_run_go_on(&self) -> bool {
        self.0.get(WENT_ON).is_some_and(|v| v == true)
    }
}

const WENT_ON: &str = "went_on";
