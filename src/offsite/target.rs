//! `backups.offsite.url` and `endpoint`: where off-site copies go, checked
//! when upkeep.yaml is read. A credential written in either is refused:
//! credentials come from the environment, as the stores' own tools read
//! them.

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

impl Target {
    /// Reads `url` (and `endpoint`, `region` for S3). Without `endpoint`,
    /// an S3 URL uses `AWS_ENDPOINT_URL` when set, else AWS itself.
    pub fn parse(
        url: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> Result<Target, String> {
        check_url(url)?;
        if let Some(endpoint) = endpoint {
            check_endpoint(endpoint)?;
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
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

/// `AWS_ENDPOINT_URL`, held to the same rules as `endpoint` (it is shown
/// in messages too). Empty is unset.
fn endpoint_from_env() -> Result<Option<String>, String> {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(endpoint) if !endpoint.is_empty() => check_endpoint(&endpoint)
            .map(|()| Some(endpoint))
            .map_err(|message| format!("AWS_ENDPOINT_URL: {message}")),
        _ => Ok(None),
    }
}

/// Checks `backups.offsite.url`.
pub fn check_url(url: &str) -> Result<(), String> {
    refuse_secrets(url)?;
    if let Some(rest) = url.strip_prefix("s3://") {
        let bucket = rest.split('/').next().unwrap_or_default();
        return check_bucket(bucket);
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

/// Checks `backups.offsite.endpoint`: an http(s) base URL, no credentials.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    refuse_secrets(endpoint)?;
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("`{endpoint}`: an endpoint is an http:// or https:// URL, e.g. http://127.0.0.1:9000")
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("`{endpoint}`: the endpoint names no host"));
    }
    Ok(())
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
