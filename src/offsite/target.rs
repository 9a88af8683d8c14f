//! `backups.offsite.url` and `endpoint`: where off-site copies go, checked
//! when upkeep.yaml is read. A credential written in either is refused:
//! credentials come from the environment, as the stores' own tools read
//! them.
//!
//! Everything the S3 client will later build a request from is checked
//! here, with a real URL parser, so that a bad value is an error with its
//! line at load time and never reaches the client (which panics on some:
//! a port over 65535, an unclosed `[`).
//!
//! The prefix of an `s3://` URL is kept exactly as written, so that the
//! objects' keys are those a user types into `aws s3 cp` (non-ASCII
//! letters, `~`, `%`, brackets and all): see `store.rs`.

use std::path::{Path, PathBuf};

/// A checked off-site location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `s3://bucket/prefix`, on AWS or an S3-compatible `endpoint`.
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: Option<String>,
    },
    /// `file:///mnt/nas/upkeep`: a folder, such as a mounted share.
    File { root: PathBuf },
}

/// The longest prefix taken, in bytes: S3 keys stop at 1,024, and the
/// environment and backup names need the rest.
const MAX_PREFIX: usize = 512;

/// The environment variables that name an S3 endpoint, in the order the
/// AWS tools read them (the S3-specific one first).
pub const ENDPOINT_VARIABLES: &[&str] = &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"];

/// Other URLs the S3 client reads from the environment, for credentials
/// (each is requested only in some setups, but a bad one panics the client
/// when it is); `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is a path.
const CLIENT_URL_VARIABLES: &[&str] = &[
    "AWS_METADATA_ENDPOINT",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
];

/// The environment variables that name a region: they go into request
/// URLs and signatures too.
const REGION_VARIABLES: &[&str] = &["AWS_REGION", "AWS_DEFAULT_REGION"];

impl Target {
    /// Reads `url` (and `endpoint`, `region` for S3). Without `endpoint`,
    /// an S3 URL uses `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` when set,
    /// else AWS itself.
    pub fn parse(
        url: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> Result<Target, String> {
        check_url(url)?;
        if let Some(endpoint) = endpoint {
            check_endpoint(endpoint)?;
        }
        if let Some(region) = region {
            check_region(region)?;
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            for name in CLIENT_URL_VARIABLES {
                if let Some(value) = variable(name) {
                    let url = match name.ends_with("RELATIVE_URI") {
                        // After ECS's address, as the client puts it.
                        true => format!("http://169.254.170.2{value}"),
                        false => value,
                    };
                    check_http_url(&url).map_err(|message| {
                        format!("{name}: {message}; fix the variable, or unset it")
                    })?;
                }
            }
            // The region in upkeep.yaml wins over these.
            for name in REGION_VARIABLES.iter().filter(|_| region.is_none()) {
                if let Some(value) = variable(name) {
                    check_region(&value).map_err(|message| format!("{name}: {message}"))?;
                }
            }
            return Ok(Target::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
                endpoint: match endpoint {
                    Some(endpoint) => Some(endpoint.to_string()),
                    None => endpoint_from_env()?,
                },
                region: region.map(str::to_string),
            });
        }
        if endpoint.is_some() {
            return Err("`endpoint` is for s3:// URLs only: remove it".to_string());
        }
        let path = url.strip_prefix("file://").unwrap_or_default();
        Ok(Target::File {
            root: PathBuf::from(path),
        })
    }

    /// The key prefix below the bucket or folder.
    pub fn prefix(&self) -> &str {
        match self {
            Target::S3 { prefix, .. } => prefix,
            Target::File { .. } => "",
        }
    }

    /// The URL as people see it (it never holds a secret).
    pub fn shown(&self) -> String {
        match self {
            Target::S3 {
                bucket,
                prefix,
                endpoint,
                ..
            } => {
                let url = match prefix.is_empty() {
                    true => format!("s3://{bucket}"),
                    false => format!("s3://{bucket}/{prefix}"),
                };
                match endpoint {
                    Some(endpoint) => format!("{url} at {endpoint}"),
                    None => url,
                }
            }
            Target::File { root } => format!("file://{}", root.display()),
        }
    }
}

/// An environment variable's value; empty is unset, as for the AWS tools.
fn variable(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, held to the same rules
/// as `endpoint` (it is shown in messages too); a bad one is named.
fn endpoint_from_env() -> Result<Option<String>, String> {
    for name in ENDPOINT_VARIABLES {
        if let Some(endpoint) = variable(name) {
            check_endpoint(&endpoint).map_err(|message| format!("{name}: {message}"))?;
            return Ok(Some(endpoint));
        }
    }
    Ok(None)
}

/// Checks `backups.offsite.url`.
pub fn check_url(url: &str) -> Result<(), String> {
    refuse_secrets(url)?;
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket)?;
        return check_prefix(url, prefix.trim_matches('/'));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !Path::new(path).is_absolute() {
            return Err(format!(
                "`{url}`: a file:// URL names an absolute folder, e.g. file:///mnt/nas/upkeep"
            ));
        }
        if path.split('/').any(|part| part == "..") {
            return Err(format!("`{url}`: `..` is not allowed in the folder"));
        }
        if let Some(c) = path.chars().find(|c| c.is_control()) {
            return Err(format!(
                "`{}`: the folder holds a control character ({}): rename the folder",
                url.escape_debug(),
                c.escape_unicode()
            ));
        }
        return Ok(());
    }
    let scheme = url.split_once("://").map_or(url, |(scheme, _)| scheme);
    match scheme {
        "gs" | "az" | "abfs" | "abfss" | "azure" => Err(format!(
            "`{url}`: {scheme}:// stores are not built into upkeep; use the store's S3-compatible API \
             (s3:// with `endpoint:`), or a mounted folder (file:///...)"
        )),
        _ => Err(format!(
            "`{url}` is not an off-site URL: write s3://BUCKET/PREFIX or file:///FOLDER"
        )),
    }
}

/// The prefix of an `s3://` URL is used as written, as the first parts of
/// every key: any character goes but those no key can hold as written
/// (control characters), and no part may be empty, `.` or `..`, which the
/// stores (and `aws s3 cp`) do not keep as written.
fn check_prefix(url: &str, prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    if let Some(c) = prefix.chars().find(|c| c.is_control()) {
        return Err(format!(
            "`{}`: the prefix holds a control character ({}), which no S3 key holds as written: remove it",
            url.escape_debug(),
            c.escape_unicode()
        ));
    }
    // Characters some S3-compatible stores change on their way in.
    let unkept = [
        ("+", "`+`, which some stores (s3s-fs) keep as a blank"),
        ("\\", "`\\`, which some stores (SeaweedFS) keep as `/`"),
    ];
    if let Some((_, why)) = unkept.iter().find(|(c, _)| prefix.contains(c)) {
        return Err(format!(
            "`{url}`: the prefix holds {why}: the keys would not be those written; use another character"
        ));
    }
    if let Some(at) = prefix.match_indices('%').map(|(at, _)| at).find(|&at| {
        prefix
            .get(at + 1..at + 3)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    }) {
        return Err(format!(
            "`{url}`: the prefix holds `{}`, which some stores (s3s-fs) read as an escape and decode: \
             the keys would not be those written; a `%` not followed by two hex digits is kept",
            &prefix[at..at + 3]
        ));
    }
    if let Some(part) = prefix
        .split('/')
        .find(|part| part.is_empty() || *part == "." || *part == "..")
    {
        let what = match part {
            "" => "an empty part (`//`)".to_string(),
            part => format!("a part `{part}`"),
        };
        return Err(format!(
            "`{url}`: the prefix has {what}, which S3 clients resolve or drop: the keys would not be \
             those written; remove it"
        ));
    }
    if prefix.len() > MAX_PREFIX {
        return Err(format!(
            "`{url}`: the prefix is {} bytes long, over {MAX_PREFIX}: S3 keys hold at most 1,024 bytes \
             with the backup's name; shorten it",
            prefix.len()
        ));
    }
    Ok(())
}

/// Checks `backups.offsite.endpoint`: an http(s) base URL, no credentials,
/// that a URL parser reads as written (host, and a port up to 65535).
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    refuse_secrets(endpoint)?;
    check_http_url(endpoint)
}

/// An http(s) URL with a host that a URL parser reads as written: the
/// client re-parses every request's URL and panics on one it cannot.
fn check_http_url(endpoint: &str) -> Result<(), String> {
    let example = "e.g. http://127.0.0.1:9000";
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("`{endpoint}`: an endpoint is an http:// or https:// URL, {example}")
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("`{endpoint}`: the endpoint names no host"));
    }
    // What a URL may hold as written (RFC 3986); anything else, a blank
    // above all, is a typo, or would be changed on its way to the store.
    if let Some(c) = endpoint
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "-._~:/[]@%!$&'()*+,;=".contains(c)))
    {
        return Err(format!(
            "`{}`: an endpoint cannot hold {}: write only the store's URL, {example}",
            endpoint.escape_debug(),
            match c {
                ' ' => "a blank".to_string(),
                c if c.is_control() => format!("a control character ({})", c.escape_unicode()),
                c => format!("`{c}`"),
            }
        ));
    }
    let parsed = reqwest::Url::parse(endpoint)
        .map_err(|error| format!("`{endpoint}` is not a valid URL ({error}): {example}"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{endpoint}`: the endpoint names no host"));
    }
    Ok(())
}

/// Checks a region (`backups.offsite.region`, `AWS_REGION`): it goes into
/// the store's host name and every signature, so it is a name of letters,
/// digits, `-`, `_` and `.`, as every store spells its regions.
pub fn check_region(region: &str) -> Result<(), String> {
    let ok = !region.is_empty()
        && region.len() <= 64
        && region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "`{}` is not a region name: letters, digits, `-`, `_` and `.`, e.g. us-east-1",
            region.escape_debug()
        )),
    }
}
/// S3's rules for bucket names: 3 to 63 lowercase letters, digits, dots
/// and hyphens, starting and ending with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), String> {
    let edges_ok =
        |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edges_ok(bucket.chars().next())
        && edges_ok(bucket.chars().last());
    match ok {
        true => Ok(()),
        false => Err(format!(
            "`{bucket}` is not an S3 bucket name: 3 to 63 lowercase letters, digits, dots and hyphens, \
             e.g. s3://my-backups/upkeep"
        )),
    }
}

/// A URL with a user, password or query string could carry a credential:
/// refused, with where credentials go instead.
fn refuse_secrets(url: &str) -> Result<(), String> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or_default();
    if authority.contains('@') || url.contains('?') || url.contains('#') {
        return Err(format!(
            "`{}` may hold a credential (a user, password or query string): credentials are never \
             read from a URL, where they would be shown and logged; set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment instead",
            crate::redact::urls(url)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("s3://my-backups/upkeep").is_ok());
        assert!(check_url("s3://my-backups").is_ok());
        assert!(check_url("file:///mnt/nas/upkeep").is_ok());
        assert!(check_url("file://relative/path").is_err());
        assert!(check_url("file:///mnt/../etc").is_err());
        assert!(check_url("s3://AB/upkeep").is_err());
        assert!(check_url("s3://-bucket/upkeep").is_err());
        assert!(
            check_url("gs://bucket")
                .unwrap_err()
                .contains("not built into upkeep")
        );
        assert!(
            check_url("ftp://x")
                .unwrap_err()
                .contains("not an off-site URL")
        );
    }

    #[test]
    fn credentials_in_urls_are_refused_and_not_echoed() {
        let error = check_url("s3://AKIAEXAMPLE:s3cr3t@bucket/x").unwrap_err();
        assert!(
            error.contains("credentials are never read from a URL"),
            "{error}"
        );
        assert!(!error.contains("s3cr3t"), "{error}");
        let error = check_url("s3://bucket/x?X-Amz-Signature=abc123").unwrap_err();
        assert!(!error.contains("abc123"), "{error}");
        let error = check_endpoint("http://user:pa55@127.0.0.1:9000").unwrap_err();
        assert!(!error.contains("pa55"), "{error}");
        assert!(check_endpoint("http://127.0.0.1:9000").is_ok());
        assert!(check_endpoint("127.0.0.1:9000").is_err());
    }

    #[test]
    fn endpoints_a_url_parser_would_refuse_are_refused_here() {
        for bad in [
            "http://127.0.0.1:99999",
            "http://127.0.0.1:65536",
            "http://[::1",
            "http://[::1]:9000x",
            "http://host:9000 x",
            "http://host:9000\tx",
            "http://ho\u{0}st",
            "http://:9000",
            "http://h\u{e9}te:9000",
            "http://h%zz:9000",
            "http://host:port",
            "http://a\"b",
            "http://a<b>",
            "http://host/{x}",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad:?} was taken");
        }
        for good in [
            "http://127.0.0.1:9000",
            "https://s3.eu-west-3.amazonaws.com",
            "http://[::1]:9000",
            "http://minio.internal:65535/",
            "https://storage.example.com/s3",
        ] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
        let error = check_endpoint("http://host:9000 x").unwrap_err();
        assert!(error.contains("a blank"), "{error}");
    }

    #[test]
    fn prefixes_keep_any_character_but_control_ones_and_empty_or_dot_parts() {
        for good in [
            "s3://bkt/sauvegard\u{e9}s",
            "s3://bkt/a~[]{}^|*%/\u{fc}ber \u{1f4be}",
            "s3://bkt/a/b/",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for bad in [
            "s3://bkt/a+b",
            "s3://bkt/a\\b",
            "s3://bkt/100%41",
            "s3://bkt/%2f",
            "s3://bkt/a//b",
            "s3://bkt/a/./b",
            "s3://bkt/../b",
            "s3://bkt/a\u{7f}b",
            "s3://bkt/a\nb",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?} was taken");
        }
        assert!(check_url(&format!("s3://bkt/{}", "x".repeat(600))).is_err());
        assert!(check_url("file:///mnt/a\u{1}b").is_err());
    }

    #[test]
    fn regions_are_names() {
        assert!(check_region("us-east-1").is_ok());
        assert!(check_region("fr-par").is_ok());
        for bad in ["", "us east", "a/b", "\u{e9}", "x:1"] {
            assert!(check_region(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_s3_url_gives_bucket_and_prefix() {
        let target =
            Target::parse("s3://my-backups/a/b/", Some("http://127.0.0.1:9000"), None).unwrap();
        assert_eq!(
            target,
            Target::S3 {
                bucket: "my-backups".into(),
                prefix: "a/b".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: None
            }
        );
        assert_eq!(
            target.shown(),
            "s3://my-backups/a/b at http://127.0.0.1:9000"
        );
    }
}
