//! Webhooks: a JSON summary POSTed to a URL, for a pipeline's `notify:`
//! and `app.notify` alike. `http://` is sent by upkeep itself; `https://`
//! by `curl` (no TLS stack in upkeep). A `user:password@` in the URL is
//! sent as HTTP Basic auth, and masked wherever the URL is shown
//! (`crate::redact`).

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use crate::http;
use crate::redact;

/// How long the webhook may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Checks a webhook URL (once its `${NAME}` are substituted): http:// as
/// upkeep sends it, or https:// for curl.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "`{}` holds blanks or control characters: percent-encode them (%20)",
                redact::urls(url).escape_debug()
            ));
        }
        return Ok(());
    }
    if url.starts_with("http://") {
        return http::parse(url, "").map(drop);
    }
    Err(format!(
        "`{}` must start with http:// or https://",
        redact::urls(url)
    ))
}

/// POSTs `body` as JSON to `url`; the error says why it was not taken.
pub fn post(url: &str, body: &Value) -> Result<(), String> {
    let body = body.to_string();
    if url.starts_with("https://") {
        return curl(url, &body);
    }
    let url = http::parse(url, "https:// URLs are sent with curl")?;
    match http::request(
        &url,
        "POST",
        Some(("application/json", body.as_bytes())),
        TIMEOUT,
    )? {
        200..=299 => Ok(()),
        status => Err(format!("HTTP {status}")),
    }
}

/// This machine's name, for the receiver to tell hosts apart.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

/// POSTs `body` to an https:// `url` with curl. Everything that varies
/// (the URL with its credentials, the body) goes to curl on its stdin, as a
/// config file (`--config -`): a command line is readable by every user of
/// the machine (`ps`, /proc), and no value can read as an option there.
fn curl(url: &str, body: &str) -> Result<(), String> {
    let mut child = std::process::Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            // The URL comes from the config: nothing but https.
            "--proto",
            "=https",
            "--max-time",
        ])
        .arg(TIMEOUT.as_secs().to_string())
        .args(["--config", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| {
            format!("cannot run curl for an https:// webhook ({error}): install curl")
        })?;
    let config = format!(
        "url = {}\nheader = \"Content-Type: application/json\"\ndata-binary = {}\n",
        curl_quote(url),
        curl_quote(body)
    );
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(config.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|error| format!("curl: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(redact::urls(String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// A value for curl's config file: double-quoted, with the escapes curl
/// reads there. (A `data-binary` value starting with `@` would name a file:
/// the body is a JSON object, so it starts with `{`.)
fn curl_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::curl_quote;

    #[test]
    fn curl_config_values_are_quoted() {
        assert_eq!(curl_quote("https://h/x"), "\"https://h/x\"");
        assert_eq!(
            curl_quote("{\"a\":\"b\\\\c\"}\n"),
            r#""{\"a\":\"b\\\\c\"}\n""#
        );
    }
}
