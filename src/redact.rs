//! Credentials in URLs never leave upkeep in what it shows.
//!
//! A webhook or health URL may carry a password (`https://user:pass@host/`)
//! or a token in its query (`?token=...`). Whatever upkeep prints, logs or
//! reports (terminal, `--verbose`, JSON events, the run log, JUnit, GitHub
//! annotations and summary, the webhook's own payload) goes through
//! [`urls`] wherever a URL can appear in it, so that this is the one place
//! that decides what is secret.

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Query parameter names that hold secrets, matched case-insensitively as
/// parts of the name (`api_key`, `X-Amz-Signature`, `access_token`...).
const SECRET_NAMES: &[&str] = &[
    "token",
    "key",
    "secret",
    "sig",
    "password",
    "passwd",
    "pwd",
    "auth",
    "credential",
];

/// `text` with the credentials of every URL in it masked: the whole
/// userinfo (`https://***@host/`), and the values of query parameters whose
/// names look secret (`?token=***`). Text without URLs is returned as is.
pub fn urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find("://") {
        let authority_start = found + 3;
        let end = rest[authority_start..]
            .find(ends_url)
            .map_or(rest.len(), |n| authority_start + n);
        out.push_str(&rest[..authority_start]);
        out.push_str(&after_scheme(&rest[authority_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Whether `c` ends a URL inside free text: URLs are shown in backticks or
/// quotes, or end at a blank.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '`' | '"' | '\'' | '<' | '>')
}

/// One URL after its `scheme://`, credentials masked. The userinfo ends at
/// the last `@` before the query: a password written with a raw `/` in it
/// is masked too (an `@` in a path is then masked with it, which is safe).
fn after_scheme(url: &str) -> String {
    let query = url.find(['?', '#']).unwrap_or(url.len());
    let (mut out, rest) = match url[..query].rfind('@') {
        Some(at) => (MASK.to_string(), &url[at..]),
        None => (String::new(), url),
    };
    let (before_fragment, fragment) = rest.split_at(rest.find('#').unwrap_or(rest.len()));
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret_name(name) => format!("{name}={MASK}"),
                    _ => pair.to_string(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    out.push_str(fragment);
    out
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|secret| name.contains(secret))
}

#[cfg(test)]
mod tests {
    use super::urls;

    #[test]
    fn masks_userinfo_and_secret_query_values() {
        assert_eq!(
            urls("http://user:secret@127.0.0.1:80/hook"),
            "http://***@127.0.0.1:80/hook"
        );
        assert_eq!(
            urls("POST to `https://tok@h/x?a=1&Token=s3&X-Amz-Signature=ab#f` failed"),
            "POST to `https://***@h/x?a=1&Token=***&X-Amz-Signature=***#f` failed"
        );
        assert_eq!(
            urls("a http://h/?api_key=k b https://u:p@h2"),
            "a http://h/?api_key=*** b https://***@h2"
        );
        // A password with a raw `/` is masked whole.
        assert_eq!(urls("http://u:p/w@h/x"), "http://***@h/x");
        for plain in ["", "no url here", "://", "x://", "http://h:1/p?q", "a@b"] {
            assert_eq!(urls(plain), plain);
        }
    }
}
