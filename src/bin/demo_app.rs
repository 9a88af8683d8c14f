//! The app stand-in: a real process holding a real DuckDB file open, as the
//! app upkeep looks after does. Used by `upkeep demo` and the tests.
//!
//! upkeep-demo-app hold DB           open DB read-write, say `ready`, wait
//! upkeep-demo-app write DB SQL      run SQL with checkpoints off, so what it
//!                                   commits is in the .wal only, say
//!                                   `ready`, wait (to be killed with -9)

use std::io::Write;

fn main() {
    if let Err(error) = run() {
        eprintln!("upkeep-demo-app: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
        _ => Err("usage: upkeep-demo-app hold DB | write DB SQL".into()),
    }
}

fn ready_then_wait() -> Result<(), Box<dyn std::error::Error>> {
    println!("ready {}", std::process::id());
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}
