//! A few lines of HTTP/1.1 over `TcpStream`, for what upkeep needs: a
//! health probe of an app on this machine, and a webhook POST. Plain
//! `http://` only: no TLS or proxy stack (`notify` hands `https://` URLs to
//! `curl`). A URL's `user:password@` is sent as HTTP Basic auth; a [`Url`]
//! is shown without it.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::redact;

/// An `http://[user:password@]host:port/path` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
    /// `user:password` from the URL's userinfo, percent-decoded: sent as
    /// HTTP Basic auth, and never shown.
    pub credentials: Option<String>,
}

/// Shown without its credentials (see `crate::redact`).
impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = format!("http://{}:{}{}", self.host, self.port, self.path);
        f.write_str(&redact::urls(&shown))
    }
}

impl std::fmt::Debug for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Url({self})")
    }
}

/// Reads an `http://` URL; `what_else` says what to use for another scheme.
/// A userinfo (`user:password@`) becomes Basic auth.
pub fn parse(url: &str, what_else: &str) -> Result<Url, String> {
    let shown = redact::urls(url);
    // A blank or a control character would end the request line or start
    // a header of its own: refused, whatever the variables held.
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{}`: a URL cannot hold blanks or control characters; percent-encode them (%20)",
            shown.escape_debug()
        ));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "`{shown}`: only plain http:// URLs are supported here; {what_else}"
        ));
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(end) => (&rest[..end], &rest[end..]),
        None => (rest, "/"),
    };
    // The fragment is the browser's: never sent.
    let path = path.split('#').next().unwrap_or_default();
    let path = match path {
        "" => "/".to_string(),
        query if query.starts_with('?') => format!("/{query}"),
        path => path.to_string(),
    };
    let (credentials, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (
            Some(percent_decode(userinfo).ok_or_else(|| {
                format!("`{shown}`: the user and password must be UTF-8, percent-encoded")
            })?),
            host_port,
        ),
        None => (None, authority),
    };
    // `[::1]` is an IPv6 address without a port, not port `1]`.
    let (host, port) = match host_port
        .rsplit_once(':')
        .filter(|_| !host_port.ends_with(']'))
    {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| format!("`{shown}`: `{port}` is not a port (1 to 65535)"))?,
        ),
        None => (host_port, 80),
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("`{shown}` has no host"));
    }
    Ok(Url {
        host: host.to_string(),
        port,
        path,
        credentials,
    })
}

/// `%XX` escapes decoded; `None` when the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[index], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                index += 3;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Standard base64 with padding (RFC 4648), for the Basic auth header.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = chunk.iter().enumerate().fold(0u32, |word, (i, &byte)| {
            word | (u32::from(byte) << (16 - 8 * i))
        });
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(word >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Opens a connection to `address` (`host:port`), trying each address it
/// resolves to.
pub fn connect(address: &str, timeout: Duration) -> Result<TcpStream, String> {
    let addresses: Vec<_> = address
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve `{address}`: {error}"))?
        .collect();
    let mut last = format!("`{address}` resolves to nothing");
    for candidate in addresses {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(stream) => return Ok(stream),
            Err(error) => last = format!("{candidate}: {error}"),
        }
    }
    Err(last)
}

/// Sends one request (`body`: content type and bytes) and returns the
/// answer's status code. Reads only the status line.
pub fn request(
    url: &Url,
    method: &str,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> Result<u16, String> {
    let mut stream = connect(&format!("{}:{}", url.host, url.port), timeout)?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let mut request = format!(
        "{method} {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: upkeep\r\nConnection: close\r\n",
        url.path, url.host, url.port
    )
    .into_bytes();
    if let Some(credentials) = &url.credentials {
        request.extend_from_slice(
            format!(
                "Authorization: Basic {}\r\n",
                base64(credentials.as_bytes())
            )
            .as_bytes(),
        );
    }
    let content = body.map_or(&[][..], |(_, bytes)| bytes);
    if let Some((content_type, bytes)) = body {
        request.extend_from_slice(
            format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                bytes.len()
            )
            .as_bytes(),
        );
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(content);
    stream
        .write_all(&request)
        .map_err(|error| format!("cannot send the request: {error}"))?;
    // The status line is all we need: `HTTP/1.1 200 OK`.
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(error) => return Err(format!("no answer: {error}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                line.lines().next().unwrap_or("")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:secret", "dXNlcjpzZWNyZXQ="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn userinfo_is_credentials_never_shown() {
        let url = parse("http://us%40er:p%3Ass@127.0.0.1:81/h?token=t", "").unwrap();
        assert_eq!(url.host, "127.0.0.1");
        assert_eq!(url.port, 81);
        assert_eq!(url.path, "/h?token=t");
        assert_eq!(url.credentials.as_deref(), Some("us@er:p:ss"));
        assert_eq!(url.to_string(), "http://127.0.0.1:81/h?token=***");
        assert_eq!(parse("http://h?x=1", "").unwrap().path, "/?x=1");
        for bad in ["http://h/a b", "http://h/\r\nX: y", "http://u:secret@h:x/"] {
            let error = parse(bad, "").unwrap_err();
            assert!(
                !error.contains("secret") && !error.contains('\n'),
                "{error}"
            );
        }
    }
}
