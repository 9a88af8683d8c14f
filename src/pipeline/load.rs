//! Loading a pipeline file and checking all of it before anything runs.
//!
//! Every problem is collected, with the line and column it is at, so that
//! `upkeep validate` can list them all; a run refuses on the first list.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::action::{Action, Outcome};
use crate::config::Config;
use crate::error::BadInput;
use crate::pipeline::model::{Pipeline, Step, When};
use crate::pipeline::notify::{self, Notify};
use crate::steps;
use crate::yaml::{self, Node, Pos, Value};

/// Every problem found in one pipeline file.
#[derive(Debug)]
pub struct Problems {
    pub path: PathBuf,
    pub list: Vec<(Pos, String)>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (pos, message)) in self.list.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{pos}: {message}", self.path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The file a PIPELINE argument names: a name in `pipelines/` beside
/// upkeep.yaml (`update` is `pipelines/update.yaml`), or a path.
pub fn resolve(config: &Config, name: &str) -> PathBuf {
    let looks_like_path = name.contains('/') || name.ends_with(".yaml") || name.ends_with(".yml");
    if looks_like_path {
        config.root.join(name)
    } else {
        config.root.join("pipelines").join(format!("{name}.yaml"))
    }
}

/// Loads and checks a pipeline file. Errors are [`Problems`] (bad input) or
/// the file cannot be read (also bad input).
pub fn load(path: &Path, config: &Config) -> anyhow::Result<Pipeline> {
    let bytes = std::fs::read(path).map_err(|error| {
        let folder = config.root.join("pipelines");
        let message = if error.kind() == std::io::ErrorKind::NotFound {
            format!(
                "no pipeline file `{}`: give a path, or one of the names in `{}`: {}",
                path.display(),
                folder.display(),
                names_in(&folder)
            )
        } else {
            format!("cannot read pipeline `{}`: {error}", path.display())
        };
        anyhow::Error::new(BadInput(message))
    })?;
    parse(path, &bytes, config)
}

/// The pipeline names in `folder`, for an error that says which exist.
fn names_in(folder: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let yaml = path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml");
            yaml.then(|| path.file_stem()?.to_str().map(|name| format!("`{name}`")))
                .flatten()
        })
        .collect();
    names.sort();
    if names.is_empty() {
        "there are none".to_string()
    } else {
        names.join(", ")
    }
}

/// Checks the bytes of a pipeline file that is (or would be) at `path`.
/// Errors are [`Problems`], as bad input: each line is `path:line:col:`
/// and what is wrong there.
pub fn parse(path: &Path, bytes: &[u8], config: &Config) -> anyhow::Result<Pipeline> {
    let mut checker = Checker {
        problems: Vec::new(),
        config,
    };
    let pipeline = match yaml::decode(bytes) {
        Ok(text) => checker.pipeline(path, text),
        Err(error) => {
            checker.problem(error.pos, error.message);
            None
        }
    };
    match pipeline {
        Some(pipeline) if checker.problems.is_empty() => Ok(pipeline),
        _ => {
            let problems = Problems {
                path: path.to_path_buf(),
                list: checker.problems,
            };
            Err(anyhow::Error::new(BadInput(problems.to_string())))
        }
    }
}

const PIPELINE_KEYS: &[&str] = &["name", "description", "env", "vars", "notify", "steps"];
const NOTIFY_KEYS: &[&str] = &["url", "on"];
const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "run",
    "uses",
    "with",
    "rollback",
    "when",
    "timeout",
    "retries",
    "allow_failure",
    "changes",
];
const ROLLBACK_KEYS: &[&str] = &["uses", "with", "run"];
const MAX_RETRIES: i64 = 100;

struct Checker<'a> {
    problems: Vec<(Pos, String)>,
    config: &'a Config,
}

impl Checker<'_> {
    fn problem(&mut self, pos: Pos, message: impl Into<String>) {
        self.problems.push((pos, message.into()));
    }

    fn pipeline(&mut self, path: &Path, text: &str) -> Option<Pipeline> {
        let root = match yaml::parse(text) {
            Ok(Some(root)) => root,
            Ok(None) => {
                self.problem(
                    Pos { line: 1, col: 1 },
                    "the file is empty: expected a mapping with `steps:`",
                );
                return None;
            }
            Err(error) => {
                self.problem(error.pos, error.message);
                return None;
            }
        };
        let entries = self.mapping(&root, "the pipeline", PIPELINE_KEYS)?;
        let stem = path.file_stem().map_or_else(
            || "pipeline".to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        let name = entries
            .get("name")
            .and_then(|node| self.string(node, "name"))
            .unwrap_or(stem);
        let description = entries
            .get("description")
            .and_then(|node| self.string(node, "description"));
        let env = entries.get("env").and_then(|node| {
            let env = self.string(node, "env")?;
            self.known_env(node.pos, &env);
            Some(env)
        });
        let vars = entries
            .get("vars")
            .map(|node| self.vars(node))
            .unwrap_or_default();
        let notify = entries.get("notify").and_then(|node| self.notify(node));
        let steps = match entries.get("steps") {
            Some(node) => self.steps(node),
            None => {
                self.problem(
                    root.pos,
                    "missing `steps:`: a pipeline needs at least one step",
                );
                Vec::new()
            }
        };
        Some(Pipeline {
            path: path.to_path_buf(),
            name,
            description,
            env,
            vars,
            notify,
            steps,
        })
    }

    /// `notify: { url: ..., on: [failure, rollback, success] }`.
    fn notify(&mut self, node: &Node) -> Option<Notify> {
        let entries = self.mapping(node, "`notify`", NOTIFY_KEYS)?;
        let Some(url_node) = entries.get("url") else {
            self.problem(
                node.pos,
                "`notify` needs a `url:` to POST the run's summary to",
            );
            return None;
        };
        let url = self.string(url_node, "url")?;
        if !steps::later(&url)
            && let Err(message) = crate::webhook::check_url(&url)
        {
            self.problem(url_node.pos, format!("`notify: url`: {message}"));
        }
        let on = match entries.get("on") {
            None => notify::DEFAULT_ON.to_vec(),
            Some(on) => {
                let Value::Seq(items) = &on.value else {
                    self.problem(
                        on.pos,
                        format!(
                            "`on` must be a list such as [failure, rollback], found {}",
                            on.kind()
                        ),
                    );
                    return None;
                };
                let mut events = Vec::new();
                for item in items {
                    match item.text().and_then(notify::When::parse) {
                        Some(when) => events.push(when),
                        None => self.problem(
                            item.pos,
                            format!(
                                "`on` takes failure, rollback and success, found `{}`",
                                item.text().unwrap_or_default()
                            ),
                        ),
                    }
                }
                events
            }
        };
        Some(Notify { url, on })
    }

    /// The entries of a mapping with only `allowed` keys; reports others.
    fn mapping<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<HashMap<String, &'n Node>> {
        let Value::Map(entries) = &node.value else {
            self.problem(
                node.pos,
                format!("{what} must be a mapping, found {}", node.kind()),
            );
            return None;
        };
        let mut found = HashMap::new();
        for (key, value) in entries {
            let Some(name) = key.text() else {
                self.problem(key.pos, format!("keys of {what} must be plain words"));
                continue;
            };
            if !allowed.contains(&name) {
                self.problem(key.pos, unknown_key(name, what, allowed));
            } else if found.insert(name.to_string(), value).is_some() {
                self.problem(key.pos, format!("`{name}` is given twice in {what}"));
            }
        }
        Some(found)
    }

    /// Reports an environment upkeep.yaml does not name.
    fn known_env(&mut self, pos: Pos, env: &str) {
        if !self.config.databases.contains_key(env) {
            let message = format!(
                "unknown environment `{env}`: {} names {}",
                self.config.path.display(),
                known(self.config.databases.keys().map(String::as_str))
            );
            self.problem(pos, message);
        }
    }

    fn string(&mut self, node: &Node, key: &str) -> Option<String> {
        match node.text() {
            Some(text) if !node.is_null() => Some(text.to_string()),
            _ => {
                self.problem(
                    node.pos,
                    format!("`{key}` must be a text, found {}", node.kind()),
                );
                None
            }
        }
    }

    fn vars(&mut self, node: &Node) -> Vec<(String, String)> {
        let Value::Map(entries) = &node.value else {
            self.problem(
                node.pos,
                format!(
                    "`vars` must be a mapping of NAME: value, found {}",
                    node.kind()
                ),
            );
            return Vec::new();
        };
        let mut vars = Vec::new();
        for (key, value) in entries {
            let name = key.text().unwrap_or_default();
            if name.starts_with("UPKEEP_") {
                self.problem(
                    key.pos,
                    format!("`{name}`: names starting with UPKEEP_ are the run's own variables: pick another name"),
                );
                continue;
            }
            if !is_var_name(name) {
                self.problem(
                    key.pos,
                    format!("`{name}` is not a variable name: letters, digits and `_`, not starting with a digit"),
                );
                continue;
            }
            if vars.iter().any(|(known, _)| known == name) {
                self.problem(key.pos, format!("`{name}` is given twice in `vars`"));
                continue;
            }
            if let Some(text) = value.text().filter(|_| !value.is_null()) {
                vars.push((name.to_string(), text.to_string()));
            } else {
                self.problem(
                    value.pos,
                    format!("variable `{name}` must be a text, found {}", value.kind()),
                );
            }
        }
        vars
    }

    fn steps(&mut self, node: &Node) -> Vec<Step> {
        let Value::Seq(items) = &node.value else {
            self.problem(
                node.pos,
                format!("`steps` must be a list of steps, found {}", node.kind()),
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.problem(
                node.pos,
                "`steps` is empty: a pipeline needs at least one step",
            );
        }
        // Every id with where it is, so `when:` can tell "later" from "unknown".
        let all_ids: Vec<(String, Pos)> = items
            .iter()
            .filter_map(|item| match &item.value {
                Value::Map(entries) => entries
                    .iter()
                    .find(|(key, _)| key.text() == Some("id"))
                    .and_then(|(_, value)| Some((value.text()?.to_string(), value.pos))),
                _ => None,
            })
            .collect();
        let mut earlier: HashMap<String, Pos> = HashMap::new();
        let mut steps = Vec::new();
        for (index, item) in items.iter().enumerate() {
            if let Some(step) = self.step(index, item, &earlier, &all_ids) {
                if let Some(id) = &step.id {
                    earlier.entry(id.clone()).or_insert(step.pos);
                }
                steps.push(step);
            }
        }
        steps
    }

    fn step(
        &mut self,
        index: usize,
        node: &Node,
        earlier: &HashMap<String, Pos>,
        all_ids: &[(String, Pos)],
    ) -> Option<Step> {
        let what = format!("step {}", index + 1);
        let entries = self.mapping(node, &what, STEP_KEYS)?;
        let id = entries.get("id").and_then(|id_node| {
            let id = self.string(id_node, "id")?;
            if !is_id(&id) {
                self.problem(
                    id_node.pos,
                    format!("step id `{id}` must be letters, digits, `-` or `_`"),
                );
            } else if let Some(first) = earlier.get(&id) {
                self.problem(
                    id_node.pos,
                    format!(
                        "step id `{id}` is used twice (first by the step at line {})",
                        first.line
                    ),
                );
            }
            Some(id)
        });
        let run = entries.get("run").and_then(|n| {
            let run = self.string(n, "run")?;
            if run.trim().is_empty() {
                self.problem(n.pos, "`run` is empty: give a shell command");
            }
            Some(run)
        });
        let uses = entries.get("uses").and_then(|n| self.uses(n));
        let with = entries.get("with");
        let action = match (run, uses) {
            (Some(_), Some(_)) => {
                self.problem(
                    node.pos,
                    format!("{what} has both `run` and `uses`: give one"),
                );
                None
            }
            (Some(run), None) => {
                if let Some(with) = with {
                    self.problem(
                        with.pos,
                        "`with` goes with `uses`, not with `run` (use `vars` for commands)",
                    );
                }
                Some(Action::Shell { run })
            }
            (None, Some(uses)) => {
                let with = with.map(|n| self.with(n, uses)).unwrap_or_default();
                Some(Action::Builtin {
                    uses: uses.name().to_string(),
                    with,
                })
            }
            (None, None) => {
                if !entries.contains_key("uses") {
                    self.problem(
                        node.pos,
                        format!(
                            "{what} has neither `run` (a shell command) nor `uses` (a step type)"
                        ),
                    );
                }
                None
            }
        };
        let rollback = entries.get("rollback").and_then(|n| self.rollback(n));
        let when = entries
            .get("when")
            .and_then(|n| self.when(n, earlier, all_ids));
        if let (Some(timeout), Some(Action::Builtin { .. })) = (entries.get("timeout"), &action) {
            self.problem(
                timeout.pos,
                "`timeout` applies to `run:` steps; built-in step types end on their own (health has its own `with: { timeout }`)",
            );
        }
        let timeout = entries
            .get("timeout")
            .and_then(|n| self.duration(n, "timeout"));
        if let (Some(changes), Some(Action::Builtin { uses, .. })) =
            (entries.get("changes"), &action)
        {
            self.problem(
                changes.pos,
                format!(
                    "`changes` applies to `run:` steps; step type `{uses}` says itself whether it changed the app"
                ),
            );
        }
        let changes = entries
            .get("changes")
            .and_then(|n| self.boolean(n, "changes"))
            .unwrap_or(true);
        let retries = entries
            .get("retries")
            .and_then(|n| self.retries(n))
            .unwrap_or(0);
        let allow_failure = entries
            .get("allow_failure")
            .and_then(|n| self.boolean(n, "allow_failure"))
            .unwrap_or(false);
        let action = action?;
        let name = entries
            .get("name")
            .and_then(|n| self.string(n, "name"))
            .or_else(|| id.clone())
            .unwrap_or_else(|| action.describe());
        Some(Step {
            id,
            name,
            pos: node.pos,
            action,
            rollback,
            when,
            timeout,
            retries,
            allow_failure,
            changes,
        })
    }

    fn uses(&mut self, node: &Node) -> Option<&'static dyn steps::StepType> {
        let name = self.string(node, "uses")?;
        if let Some(step) = steps::find(&name) {
            return Some(step);
        }
        self.problem(
            node.pos,
            format!(
                "unknown step type `{name}`, expected one of: {}",
                steps::names().join(", ")
            ),
        );
        None
    }

    fn with(&mut self, node: &Node, uses: &dyn steps::StepType) -> BTreeMap<String, String> {
        let what = format!("`with` of step type `{}`", uses.name());
        let Some(entries) = self.mapping(node, &what, uses.keys()) else {
            return BTreeMap::new();
        };
        let mut with = BTreeMap::new();
        for (key, value) in entries {
            match value.text().filter(|_| !value.is_null()) {
                Some(text) if text.trim().is_empty() => self.problem(
                    value.pos,
                    format!("`{key}` is empty: give a value, or remove the key"),
                ),
                Some(text) => {
                    if key == "env" && !steps::later(text) {
                        self.known_env(value.pos, text);
                    }
                    if uses.commands().contains(&key.as_str()) && steps::later(text) {
                        self.problem(value.pos, pasted_into_shell(&key, text));
                    }
                    with.insert(key, text.to_string());
                }
                None => self.problem(
                    value.pos,
                    format!("`{key}` must be a single value, found {}", value.kind()),
                ),
            }
        }
        if let Err(message) = uses.check(&with) {
            self.problem(node.pos, format!("{what}: {message}"));
        }
        with
    }

    fn rollback(&mut self, node: &Node) -> Option<Action> {
        if let Some(run) = node.text().filter(|_| !node.is_null()) {
            return Some(Action::Shell {
                run: run.to_string(),
            });
        }
        let entries = self.mapping(node, "`rollback`", ROLLBACK_KEYS)?;
        match (entries.get("run"), entries.get("uses")) {
            (Some(run), None) => {
                if let Some(with) = entries.get("with") {
                    self.problem(with.pos, "`with` goes with `uses`, not with `run`");
                }
                self.string(run, "run").map(|run| Action::Shell { run })
            }
            (None, Some(uses)) => {
                let uses = self.uses(uses)?;
                let with = entries
                    .get("with")
                    .map(|n| self.with(n, uses))
                    .unwrap_or_default();
                Some(Action::Builtin {
                    uses: uses.name().to_string(),
                    with,
                })
            }
            _ => {
                self.problem(
                    node.pos,
                    "`rollback` must be a shell command, or `{ uses: TYPE, with: {...} }`",
                );
                None
            }
        }
    }

    fn when(
        &mut self,
        node: &Node,
        earlier: &HashMap<String, Pos>,
        all_ids: &[(String, Pos)],
    ) -> Option<When> {
        let text = self.string(node, "when")?;
        let parsed = text.rsplit_once('.').and_then(|(step, outcome)| {
            let outcome = match outcome {
                "ok" => Outcome::Ok,
                "failed" => Outcome::Failed,
                "skipped" => Outcome::Skipped,
                _ => return None,
            };
            Some(When {
                step: step.to_string(),
                outcome,
            })
        });
        let Some(when) = parsed else {
            self.problem(node.pos, format!("`when: {text}` must be ID.ok, ID.failed or ID.skipped, where ID is an earlier step's `id`"));
            return None;
        };
        if !earlier.contains_key(&when.step) {
            match all_ids.iter().find(|(id, _)| *id == when.step) {
                Some((_, pos)) => self.problem(
                    node.pos,
                    format!("`when` names step `{}`, which comes later (line {}): a condition can only look at earlier steps", when.step, pos.line),
                ),
                None => self.problem(
                    node.pos,
                    format!(
                        "`when` names step `{}`, but no earlier step has that `id` (known: {})",
                        when.step,
                        known(earlier.keys().map(String::as_str))
                    ),
                ),
            }
            return None;
        }
        Some(when)
    }

    fn duration(&mut self, node: &Node, key: &str) -> Option<Duration> {
        let text = self.string(node, key)?;
        match humantime::parse_duration(&text) {
            Ok(duration) if !duration.is_zero() => Some(duration),
            _ => {
                self.problem(
                    node.pos,
                    format!("`{key}: {text}` is not a duration: expected e.g. 90s, 5m or 1h"),
                );
                None
            }
        }
    }

    fn retries(&mut self, node: &Node) -> Option<u32> {
        match node.text().and_then(|t| t.parse::<i64>().ok()) {
            Some(n) if (0..=MAX_RETRIES).contains(&n) => Some(n as u32),
            _ => {
                self.problem(
                    node.pos,
                    format!("`retries` must be a whole number from 0 to {MAX_RETRIES}"),
                );
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, key: &str) -> Option<bool> {
        match &node.value {
            Value::Scalar {
                text,
                quoted: false,
            } if text == "true" => Some(true),
            Value::Scalar {
                text,
                quoted: false,
            } if text == "false" => Some(false),
            _ => {
                self.problem(node.pos, format!("`{key}` must be true or false"));
                None
            }
        }
    }
}

fn unknown_key(name: &str, what: &str, allowed: &[&str]) -> String {
    let hint = allowed
        .iter()
        .find(|candidate| edit_distance(name, candidate) <= 2)
        .map_or_else(String::new, |close| format!(" (did you mean `{close}`?)"));
    if allowed.is_empty() {
        format!("unknown key `{name}` in {what}: it takes no keys")
    } else {
        format!(
            "unknown key `{name}` in {what}{hint}, expected one of: {}",
            allowed.join(", ")
        )
    }
}

/// Why `${NAME}` cannot be in a command: the value would become shell text.
fn pasted_into_shell(key: &str, text: &str) -> String {
    let names: Vec<String> = text
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}'))
        .filter(|(name, _)| is_var_name(name))
        .map(|(name, _)| format!("\"${name}\""))
        .collect();
    let instead = if names.is_empty() {
        "`\"$NAME\"`".to_string()
    } else {
        format!("`{}`", names.join("`, `"))
    };
    format!(
        "`{key}` is run by the shell, so `${{...}}` would paste a value into shell code: \
         write {instead} instead (every variable is in the command's environment, and within \
         double quotes the shell reads it as a plain value)"
    )
}

fn known<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    if names.is_empty() {
        "none".to_string()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn is_id(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub fn is_var_name(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}
