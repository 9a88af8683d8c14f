//! S3 credentials, from where the AWS tools read them: the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), else
//! the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default
//! `~/.aws/credentials`, profile `AWS_PROFILE` or `default`), else web
//! identity or container credentials, as `object_store` reads them. The
//! instance metadata service (169.254.169.254) is asked only when
//! `AWS_EC2_METADATA_DISABLED=false` says so: a host with no credentials
//! gets a clear error at once, not a request to an address it may not
//! reach (or may reach the wrong thing at).
//!
//! Whatever the store says back goes through [`mask`] before anyone sees
//! it.

use anyhow::{Result, bail};
use object_store::aws::AmazonS3Builder;

const SECRET_VARIABLES: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
];

/// Endpoint variables `object_store` would read on its own: the endpoint
/// comes from the checked target instead (`AWS_ENDPOINT_URL_S3` and
/// `AWS_ENDPOINT_URL` are checked there), so that an unchecked one never
/// reaches the client, nor overrides `backups.offsite.endpoint`.
const ENDPOINT_VARIABLES: &[&str] = &["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT"];

/// An S3 builder with what the environment's `AWS_*` variables say, as
/// `AmazonS3Builder::from_env` reads them, but that an empty variable is
/// no value (rather than an empty key), and the endpoint is left to the
/// target.
pub fn builder_from_env() -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::new();
    for (name, value) in std::env::vars_os() {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
            continue;
        };
        if name.starts_with("AWS_")
            && !value.is_empty()
            && !ENDPOINT_VARIABLES.contains(&name)
            && let Ok(key) = name.to_ascii_lowercase().parse()
        {
            builder = builder.with_config(key, value);
        }
    }
    builder
}

/// Adds the credentials found to `builder` (made by [`builder_from_env`]);
/// `shown` names the store in errors.
pub fn apply(builder: AmazonS3Builder, shown: &str) -> Result<AmazonS3Builder> {
    let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    if env("AWS_ACCESS_KEY_ID").is_some() {
        if env("AWS_SECRET_ACCESS_KEY").is_none() {
            bail!(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both to use the off-site store `{shown}`"
            );
        }
        return Ok(builder);
    }
    if let Some(profile) = shared_profile()? {
        let mut builder = builder
            .with_access_key_id(profile.key_id)
            .with_secret_access_key(profile.secret_key);
        if let Some(token) = profile.token {
            builder = builder.with_token(token);
        }
        return Ok(builder);
    }
    let other_ways = env("AWS_WEB_IDENTITY_TOKEN_FILE").is_some()
        || env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
        || env("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some();
    let metadata_on =
        env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("false"));
    if !other_ways && !metadata_on {
        bail!(
            "no credentials for the off-site store `{shown}`: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             or AWS_PROFILE with a profile in ~/.aws/credentials (on EC2 with an instance role, set \
             AWS_EC2_METADATA_DISABLED=false to use the instance metadata service)"
        );
    }
    Ok(builder)
}

struct Profile {
    key_id: String,
    secret_key: String,
    token: Option<String>,
}

/// The profile's keys in the shared credentials file, if it has them.
fn shared_profile() -> Result<Option<Profile>> {
    let path = match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
        Some(path) => std::path::PathBuf::from(path),
        None => match std::env::var_os("HOME") {
            Some(home) => std::path::Path::new(&home).join(".aws/credentials"),
            None => return Ok(None),
        },
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".to_string());
    let mut in_profile = false;
    let (mut key_id, mut secret_key, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = section.trim() == profile;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !in_profile {
            continue;
        }
        let value = Some(value.trim().to_string());
        match key.trim() {
            "aws_access_key_id" => key_id = value,
            "aws_secret_access_key" => secret_key = value,
            "aws_session_token" => token = value,
            _ => {}
        }
    }
    match (key_id, secret_key) {
        (Some(key_id), Some(secret_key)) => Ok(Some(Profile {
            key_id,
            secret_key,
            token,
        })),
        (None, None) => Ok(None),
        _ => bail!(
            "profile `{profile}` in `{}` has only one of aws_access_key_id and aws_secret_access_key: give both",
            path.display()
        ),
    }
}

/// `text` with every credential value upkeep knows of replaced by `***`
/// (a store may echo the key id in an error), and URLs' credentials masked.
pub fn mask(text: &str) -> String {
    let mut masked = crate::redact::urls(text);
    for name in SECRET_VARIABLES {
        if let Ok(value) = std::env::var(name)
            && value.len() >= 4
        {
            masked = masked.replace(&value, crate::redact::MASK);
        }
    }
    if let Ok(Some(profile)) = shared_profile() {
        for value in [
            Some(profile.key_id),
            Some(profile.secret_key),
            profile.token,
        ]
        .into_iter()
        .flatten()
        .filter(|value| value.len() >= 4)
        {
            masked = masked.replace(&value, crate::redact::MASK);
        }
    }
    masked
}
