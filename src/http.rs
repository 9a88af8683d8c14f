//! A few lines of HTTP/1.1 over `TcpStream`, for what upkeep needs: a
//! health probe of an app on this machine, and a webhook POST. Plain
//! `http://` only: no TLS or proxy stack (`notify` hands `https://` URLs to
//! `curl`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// An `http://host:port/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// Reads an `http://` URL; `what_else` says what to use for another scheme.
pub fn parse(url: &str, what_else: &str) -> Result<Url, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "`{url}`: only plain http:// URLs are supported here; {what_else}"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("`{url}`: `{port}` is not a port"))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    Ok(Url {
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
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
