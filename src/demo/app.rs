//! The app stand-in: a real process holding a real DuckDB file open, as the
//! app upkeep looks after does. Used by `upkeep demo` (as the hidden
//! `upkeep demo-app`, so that `cargo run` builds all the demo needs) and by
//! the tests (as the `upkeep-demo-app` binary).
//!
//! upkeep-demo-app hold DB           open DB read-write, say `ready`, wait
//! upkeep-demo-app write DB SQL      run SQL with checkpoints off, so what it
//!                                   commits is in the .wal only, say
//!                                   `ready`, wait (to be killed with -9)
//! upkeep-demo-app write-until DB SQL STOP_FILE LAST_SQL
//!                                   as `write`, then, once STOP_FILE
//!                                   exists, run LAST_SQL and close DB
//!                                   cleanly (DuckDB checkpoints it), then
//!                                   remove STOP_FILE: an app's last
//!                                   commits as it stops
//! upkeep-demo-app serve DB PORT VERSION
//!                                   hold DB read-write and answer
//!                                   `GET /health` on 127.0.0.1:PORT with
//!                                   `200 VERSION users=N` (N read from DB;
//!                                   503 when it cannot be read);
//!                                   run $APP_SQL first, if set, leaving
//!                                   its rows in the .wal; `POST /snapshot`
//!                                   (body: a path) writes a consistent
//!                                   copy of DB there; `POST /order`
//!                                   (body: a number N) commits order N
//!                                   (again: nothing new), as an app's
//!                                   users do
//! upkeep-demo-app snapshot PORT PATH
//!                                   the snapshot hook: ask the app on
//!                                   PORT for a copy at PATH
//! upkeep-demo-app blake3 FILE       print the file's blake3 hash, as a
//!                                   backup's manifest records it (for
//!                                   `scripts/crash_soak.sh`)

use std::io::Write;

/// Runs the app stand-in with its arguments; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("upkeep-demo-app: {error}");
            1
        }
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["hold", db] => {
            let _conn = duckdb::Connection::open(db)?;
            ready_then_wait()
        }
        ["write", db, sql] => {
            let conn = duckdb::Connection::open(db)?;
            // Keep what is committed in the .wal: no automatic checkpoint.
            conn.execute_batch("SET checkpoint_threshold = '1TB'")?;
            conn.execute_batch(sql)?;
            ready_then_wait()
        }
        ["write-until", db, sql, stop_file, last_sql] => {
            let conn = duckdb::Connection::open(db)?;
            conn.execute_batch("SET checkpoint_threshold = '1TB'")?;
            conn.execute_batch(sql)?;
            println!("ready {}", std::process::id());
            std::io::stdout().flush()?;
            while !std::path::Path::new(stop_file).exists() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            // The app's last commit, then a clean close: DuckDB
            // checkpoints it into the file.
            conn.execute_batch(last_sql)?;
            drop(conn);
            // Closed: whoever waits for the stop may go on.
            std::fs::remove_file(stop_file)?;
            Ok(())
        }
        ["serve", db, port, version] => serve(db, port.parse()?, version),
        ["snapshot", port, target] => request_snapshot(port.parse()?, target),
        ["blake3", file] => {
            println!(
                "{}",
                crate::fsx::hash_file(std::path::Path::new(file))?.to_hex()
            );
            Ok(())
        }
        _ => Err(
            "usage: upkeep-demo-app hold DB | write DB SQL | write-until DB SQL STOP_FILE LAST_SQL | serve DB PORT VERSION | snapshot PORT PATH | blake3 FILE"
                .into(),
        ),
    }
}

fn serve(db: &str, port: u16, version: &str) -> Result<(), Box<dyn std::error::Error>> {
    let conn = duckdb::Connection::open(db)?;
    // Rows the app writes on start stay in the .wal until a checkpoint,
    // as an app's recent writes do.
    if let Ok(sql) = std::env::var("APP_SQL") {
        conn.execute_batch("SET checkpoint_threshold = '1TB'")?;
        conn.execute_batch(&sql)?;
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    println!(
        "ready {} serving {version} on 127.0.0.1:{port}",
        std::process::id()
    );
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let conn = conn.try_clone()?;
        let version = version.to_string();
        // One thread a request: a snapshot in progress never keeps the
        // health probe waiting.
        std::thread::spawn(move || answer(stream, &conn, &version));
    }
    Ok(())
}

fn answer(mut stream: std::net::TcpStream, conn: &duckdb::Connection, version: &str) {
    use std::io::Read;
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    // The request line and headers; a snapshot request carries its target
    // path as the body, after a blank line.
    while let Ok(read) = stream.read(&mut buffer) {
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..read]);
        if let Some(end) = find(&request, b"\r\n\r\n") {
            let length = content_length(&request[..end]);
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&request).into_owned();
    let body_text = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    let (status, body) = if text.starts_with("POST /order") {
        match body_text.parse::<i64>().map(|id| {
            conn.execute(
                "INSERT OR IGNORE INTO orders (id, user_id, note) VALUES (?, 0, 'live')",
                [id],
            )
        }) {
            Ok(Ok(_)) => ("200 OK", "committed\n".to_string()),
            Ok(Err(error)) => ("500 Internal Server Error", format!("{error}\n")),
            Err(_) => (
                "400 Bad Request",
                "the body is an order number\n".to_string(),
            ),
        }
    } else if text.starts_with("POST /snapshot") {
        let target = body_text;
        match snapshot(conn, target) {
            Ok(()) => ("200 OK", format!("snapshot written to {target}\n")),
            Err(error) => ("500 Internal Server Error", format!("{error}\n")),
        }
    } else {
        // An app whose database lacks what it needs is not healthy.
        match conn.query_row("SELECT count(*) FROM users", [], |row| row.get::<_, i64>(0)) {
            Ok(users) => ("200 OK", format!("{version} users={users}\n")),
            Err(error) => ("503 Service Unavailable", format!("{version} {error}\n")),
        }
    };
    // One write: a client that reads the first packet sees the status line.
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// The snapshot hook, as an app would do it: from inside the process that
/// holds the database, copy it into a new file in the same storage version
/// (so that an older DuckDB can read it), while requests go on.
fn snapshot(conn: &duckdb::Connection, target: &str) -> Result<(), duckdb::Error> {
    let quote = |text: &str| format!("'{}'", text.replace('\'', "''"));
    let (database, version): (String, String) = conn.query_row(
        "SELECT current_database(), coalesce(rtrim(tags['storage_version'], '+'), 'v1.0.0') \
         FROM duckdb_databases() WHERE database_name = current_database()",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    conn.execute_batch(&format!(
        "ATTACH {} AS upkeep_snapshot (STORAGE_VERSION {}); \
         COPY FROM DATABASE \"{}\" TO upkeep_snapshot; DETACH upkeep_snapshot;",
        quote(target),
        quote(&version),
        database.replace('"', "\"\"")
    ))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// `upkeep-demo-app snapshot PORT PATH`: asks the app on PORT to write its
/// snapshot to PATH (the hook upkeep runs, with PATH from $UPKEEP_SNAPSHOT).
fn request_snapshot(port: u16, target: &str) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "POST /snapshot HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{target}",
        target.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("the app refused the snapshot: {answer}").into())
    }
}

fn ready_then_wait() -> Result<(), Box<dyn std::error::Error>> {
    println!("ready {}", std::process::id());
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}
