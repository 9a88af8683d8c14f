//! The corruption corpus: real files in both storage formats (2.0 and
//! v1.0.0), damaged with seeded random bytes in every kind of block: the
//! headers, data, metadata, index (ART) and free blocks, and cut inside the
//! last block in use. `check --deep` must flag every damaged variant and no
//! free-block one; `backup` must refuse the damaged ones; `repair` must
//! bring back a database that passes `check --deep`, from a backup when
//! there is one, and keep the damaged bytes in quarantine as they were.
//!
//! Which block is which comes from DuckDB (`pragma_storage_info`,
//! `pragma_metadata_info`, `pragma_database_size`) and the file's own free
//! list; the free list read by upkeep is checked against DuckDB's count of
//! free blocks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use duckdb::Connection;

use crate::support::*;

const SEED: u64 = 0x5eed_1dea_2026_1129;
const BLOCKS_START: u64 = 12_288;

/// A small, seeded generator: the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick(&mut self, set: &BTreeSet<u64>) -> Option<u64> {
        let items: Vec<u64> = set.iter().copied().collect();
        (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize])
    }
}

/// A pristine database and which of its blocks is which.
struct Corpus {
    pristine: Vec<u8>,
    block_size: u64,
    data: BTreeSet<u64>,
    metadata: BTreeSet<u64>,
    index: BTreeSet<u64>,
    free: BTreeSet<u64>,
}

/// Builds the test schema with enough rows for several blocks of each kind,
/// then drops a table, so that the file has free blocks too.
fn build(path: &Path, storage_version: Option<&str>) -> Corpus {
    make_db(path, storage_version, 30_000);
    sql(
        path,
        "CREATE TABLE scratch (id INTEGER PRIMARY KEY, s VARCHAR);
         INSERT INTO scratch SELECT i, md5(i::VARCHAR) FROM range(150000) r(i);
         CHECKPOINT;
         DROP TABLE scratch;
         DELETE FROM orders WHERE id % 7 = 0;
         CHECKPOINT;",
    );
    let conn = Connection::open_with_flags(
        path,
        duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .unwrap(),
    )
    .unwrap();
    let ids = |sql: &str| -> BTreeSet<u64> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |row| row.get::<_, i64>(0))
            .unwrap()
            .map(|id| id.unwrap() as u64)
            .collect()
    };
    let mut data = BTreeSet::new();
    for table in ["users", "orders"] {
        data.extend(ids(&format!(
            "SELECT block_id FROM pragma_storage_info('{table}') WHERE block_id >= 0 UNION \
             SELECT unnest(additional_block_ids) FROM pragma_storage_info('{table}') WHERE additional_block_ids IS NOT NULL"
        )));
    }
    let metadata = ids("SELECT DISTINCT block_id FROM pragma_metadata_info()");
    let (total, free_count, block_size): (i64, i64, i64) = conn
        .query_row(
            "SELECT total_blocks, free_blocks, block_size FROM pragma_database_size()",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    drop(conn);

    let header = upkeep::db::header::read(path).unwrap().unwrap();
    let file = std::fs::File::open(path).unwrap();
    let size = file.metadata().unwrap().len();
    let free = upkeep::db::layout::free_blocks(&file, &header, size).unwrap();
    assert_eq!(
        free.len() as i64,
        free_count,
        "upkeep's reading of the free list disagrees with DuckDB's count of free blocks"
    );
    assert_eq!(header.block_count as i64, total);
    assert!(free.is_disjoint(&data) && free.is_disjoint(&metadata));
    let index: BTreeSet<u64> = (0..header.block_count)
        .filter(|block| !free.contains(block) && !data.contains(block) && !metadata.contains(block))
        .collect();
    for (kind, set) in [
        ("data", &data),
        ("metadata", &metadata),
        ("index", &index),
        ("free", &free),
    ] {
        assert!(
            !set.is_empty(),
            "the corpus database ({storage_version:?}) has no {kind} block"
        );
    }
    Corpus {
        pristine: bytes(path),
        block_size: block_size as u64,
        data,
        metadata,
        index,
        free,
    }
}

/// One damaged copy of the pristine file.
struct Variant {
    name: String,
    bytes: Vec<u8>,
    damaged: bool,
}

/// Overwrites 16 to 64 random bytes at a random place inside `[start, end)`,
/// making sure at least one byte changes.
fn scribble(bytes: &mut [u8], start: u64, end: u64, rng: &mut Rng) {
    let len = 16 + rng.below(49) as usize;
    let at = (start + rng.below(end - start - len as u64)) as usize;
    let before = bytes[at..at + len].to_vec();
    for byte in &mut bytes[at..at + len] {
        *byte = rng.next() as u8;
    }
    if bytes[at..at + len] == before[..] {
        bytes[at] ^= 0xFF;
    }
}

fn variants(corpus: &Corpus, rng: &mut Rng) -> Vec<Variant> {
    let mut variants = Vec::new();
    for header in [0u64, 4096, 8192] {
        let mut bytes = corpus.pristine.clone();
        scribble(&mut bytes, header + 8, header + 4096, rng);
        variants.push(Variant {
            name: format!("header at {header}"),
            bytes,
            damaged: true,
        });
    }
    let kinds = [
        ("data", &corpus.data, true),
        ("metadata", &corpus.metadata, true),
        ("index", &corpus.index, true),
        ("free", &corpus.free, false),
    ];
    for (kind, set, damaged) in kinds {
        for _ in 0..2 {
            let block = rng.pick(set).unwrap();
            let start = BLOCKS_START + block * corpus.block_size;
            let end = (start + corpus.block_size).min(corpus.pristine.len() as u64);
            if end <= start + 64 {
                continue;
            }
            let mut bytes = corpus.pristine.clone();
            // The checksum itself is part of the block, and may be hit too.
            scribble(&mut bytes, start, end, rng);
            variants.push(Variant {
                name: format!("{kind} block {block}"),
                bytes,
                damaged,
            });
        }
    }
    // Cut inside the last block in use, whatever kind it is.
    let last = (corpus.data.iter())
        .chain(&corpus.metadata)
        .chain(&corpus.index)
        .max()
        .copied()
        .unwrap();
    let kind = if corpus.index.contains(&last) {
        "index"
    } else if corpus.metadata.contains(&last) {
        "metadata"
    } else {
        "data"
    };
    let cut = BLOCKS_START + last * corpus.block_size + 1 + rng.below(corpus.block_size - 2);
    if cut < corpus.pristine.len() as u64 {
        variants.push(Variant {
            name: format!("cut inside the last block in use ({kind} block {last})"),
            bytes: corpus.pristine[..cut as usize].to_vec(),
            damaged: true,
        });
    }
    variants
}

fn quarantined(sandbox: &Sandbox) -> Vec<PathBuf> {
    walk(&sandbox.path("data/quarantine"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "duckdb"))
        .collect()
}

#[test]
fn every_kind_of_damaged_block_is_found_in_both_formats_and_repaired() {
    let mut rng = Rng(SEED);
    let mut missed = Vec::new();
    let mut false_alarms = Vec::new();
    let mut count = 0;
    for storage_version in [None, Some("v1.0.0")] {
        let build_dir = tempfile::tempdir().unwrap();
        let corpus = build(&build_dir.path().join("pristine.duckdb"), storage_version);
        for (n, variant) in variants(&corpus, &mut rng).into_iter().enumerate() {
            count += 1;
            let label = format!("{} ({storage_version:?})", variant.name);
            let sandbox = Sandbox::new();
            let db = sandbox.db("prod");
            // Half of the variants have a good backup to repair from.
            let with_backup = n % 2 == 0;
            if with_backup {
                std::fs::write(&db, &corpus.pristine).unwrap();
                sandbox.upkeep(&["backup", "production"]).code(0);
            }
            std::fs::write(&db, &variant.bytes).unwrap();

            let check = sandbox.upkeep(&["check", "production", "--deep"]);
            match (variant.damaged, check.code) {
                (true, Some(1)) | (false, Some(0)) => {}
                (true, _) => missed.push(format!("{label}\n{check}")),
                (false, _) => false_alarms.push(format!("{label}\n{check}")),
            }
            if !variant.damaged {
                sandbox.upkeep(&["backup", "production"]).code(0);
                continue;
            }

            let before = sandbox.backups("production");
            let backup = sandbox.upkeep(&["backup", "production"]);
            assert_eq!(
                backup.code,
                Some(1),
                "{label}: a damaged database was backed up\n{backup}"
            );
            assert_eq!(
                sandbox.backups("production"),
                before,
                "{label}: backups changed\n{backup}"
            );

            let repair = sandbox.upkeep(&["repair", "production"]);
            repair.code(0);
            if with_backup {
                repair.stdout_has("backup");
            }
            sandbox.upkeep(&["check", "production", "--deep"]).code(0);
            let kept = quarantined(&sandbox);
            assert_eq!(kept.len(), 1, "{label}: quarantine\n{repair}");
            assert!(
                bytes(&kept[0]) == variant.bytes,
                "{label}: the quarantined file differs from the damaged one\n{repair}"
            );
        }
    }
    eprintln!(
        "corruption corpus: {count} variants, {} missed, {} false alarms",
        missed.len(),
        false_alarms.len()
    );
    assert!(missed.is_empty(), "damage missed:\n{}", missed.join("\n\n"));
    assert!(
        false_alarms.is_empty(),
        "false alarms:\n{}",
        false_alarms.join("\n\n")
    );
}
