//! The app stand-in: a real process holding a real DuckDB file open, as the
//! app upkeep looks after does. Used by `upkeep demo` (as the hidden
//! `upkeep demo-app`, so that `cargo run` builds all the demo needs) and by
//! the tests (as the `upkeep-demo-app` binary).
//!
//! upkeep-demo-app hold DB           open DB read-write, say `ready`, wait
//! upkeep-demo-app write DB SQL      run SQL with checkpoints off, so what it
//!                                   commits is in the .wal only, say
//!                                   `ready`, wait (to be killed with -9)
//! upkeep-demo-app serve DB PORT VERSION
//!                                   hold DB read-write and answer
//!                                   `GET /health` on 127.0.0.1:PORT with
//!                                   `200 VERSION users=N` (N read from DB)
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
        ["serve", db, port, version] => serve(db, port.parse()?, version),
        ["blake3", file] => {
            println!(
                "{}",
                crate::fsx::hash_file(std::path::Path::new(file))?.to_hex()
            );
            Ok(())
        }
        _ => Err(
            "usage: upkeep-demo-app hold DB | write DB SQL | serve DB PORT VERSION | blake3 FILE"
                .into(),
        ),
    }
}

fn serve(db: &str, port: u16, version: &str) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Read;
    let conn = duckdb::Connection::open(db)?;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    println!(
        "ready {} serving {version} on 127.0.0.1:{port}",
        std::process::id()
    );
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request);
        let users: i64 = conn
            .query_row("SELECT count(*) FROM users", [], |row| row.get(0))
            .unwrap_or(-1);
        let body = format!("{version} users={users}\n");
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(())
}

fn ready_then_wait() -> Result<(), Box<dyn std::error::Error>> {
    println!("ready {}", std::process::id());
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}
