fn main() {
    std::process::exit(upkeep::main());
}
