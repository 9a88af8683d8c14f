//! An app on DuckDB 1.x cannot open files in the 2.0 format: every file
//! upkeep writes keeps the storage version of the file it replaces.

use crate::support::*;

const V1: u64 = 64; // v1.0.0 .. v1.1.x
const V2: u64 = 999; // v2.0.0, DuckDB 2.0's default

fn old_app_sandbox() -> Sandbox {
    let sandbox = Sandbox::new();
    std::fs::remove_file(sandbox.db("prod")).unwrap();
    make_db(&sandbox.db("prod"), Some("v1.1.0"), 3_000);
    assert_eq!(header_version(&sandbox.db("prod")), V1);
    sandbox
}

#[test]
fn backup_and_restore_keep_the_version() {
    let sandbox = old_app_sandbox();
    // The app wrote more since: a checkpoint by DuckDB 2.0 keeps the version.
    let mut app = sandbox.app(&["write", sandbox.db("prod").to_str().unwrap(), WAL_ROWS]);
    app.kill9();
    sandbox.upkeep(&["backup", "production"]).code(0);
    let backup = sandbox.backups("production")[0].clone();
    assert_eq!(header_version(&backup), V1);
    assert_eq!(header_version(&sandbox.db("prod")), V1);
    let name = backup.file_name().unwrap().to_string_lossy().into_owned();
    sandbox.upkeep(&["restore", "production", &name]).code(0);
    assert_eq!(header_version(&sandbox.db("prod")), V1);
    sandbox
        .upkeep(&["check", "production"])
        .code(0)
        .stdout_has("storage v1.0.0");
}

#[test]
fn repair_from_backup_keeps_the_version() {
    let sandbox = old_app_sandbox();
    sandbox.upkeep(&["backup", "production"]).code(0);
    corrupt_block_of(&sandbox.db("prod"), "orders");
    sandbox
        .upkeep(&["repair", "production"])
        .code(0)
        .stdout_has("restored");
    assert_eq!(header_version(&sandbox.db("prod")), V1);
}

#[test]
fn salvage_keeps_the_version() {
    let sandbox = old_app_sandbox();
    corrupt_block_of(&sandbox.db("prod"), "orders");
    sandbox
        .upkeep(&["repair", "production"])
        .code(0)
        .stdout_has("salvaged");
    assert_eq!(header_version(&sandbox.db("prod")), V1);
}

#[test]
fn an_empty_rebuild_uses_the_configured_version() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    assert_eq!(header_version(&db), V2);
    sandbox.write("upkeep.yaml", &format!("{CONFIG}storage_version: v1.2.0\n"));
    std::fs::write(&db, vec![7u8; 50_000]).unwrap();
    sandbox
        .upkeep(&["repair", "production"])
        .code(0)
        .stdout_has("EMPTY");
    assert_eq!(header_version(&db), 65, "v1.2.0 is version 65");
}

#[test]
fn a_salvage_of_a_new_format_file_stays_in_the_new_format() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    corrupt_block_of(&db, "orders");
    sandbox
        .upkeep(&["repair", "production"])
        .code(0)
        .stdout_has("salvaged");
    assert_eq!(header_version(&db), V2);
}

#[test]
fn an_empty_rebuild_keeps_the_version_of_a_header_it_can_still_read() {
    let sandbox = Sandbox::new();
    let db = sandbox.db("prod");
    std::fs::remove_file(&db).unwrap();
    make_db(&db, Some("v1.2.0"), 3_000);
    let good = bytes(&db);
    // The header survives, the blocks DuckDB needs to open it do not.
    std::fs::write(&db, &good[..12_288 + 1_000]).unwrap();
    sandbox
        .upkeep(&["repair", "production"])
        .code(0)
        .stdout_has("EMPTY");
    assert_eq!(header_version(&db), 65, "v1.2.0 is version 65");
}
