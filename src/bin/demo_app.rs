//! The app stand-in as its own binary, for the tests: see `upkeep::demo::app`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(upkeep::demo::app::main(&args));
}
