//! The nastiest YAML files, run through the real binary: each is bad input
//! (exit 2, `file:line:column:`), never a crash or a signal, and files that
//! only look odd (a byte-order mark) work.

use crate::support::*;

const DEPTH: usize = 100_000;

/// Nestings of 100,000 levels, in YAML's several ways.
fn deep_values() -> Vec<(&'static str, String)> {
    vec![
        ("block list", "- ".repeat(DEPTH)),
        ("flow list", "[".repeat(DEPTH)),
        (
            "closed flow list",
            format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH)),
        ),
        ("flow mapping", "{a: ".repeat(DEPTH)),
    ]
}

#[test]
fn a_pipeline_nested_100000_levels_deep_is_bad_input() {
    let sandbox = Sandbox::new();
    for (what, value) in deep_values() {
        sandbox.pipeline("deep", &format!("steps:\n  {value}x\n"));
        let run = sandbox.upkeep(&["validate", "deep"]);
        run.code(2)
            .stderr_has("deep.yaml:2:")
            .stderr_has("nested more than 64 levels deep");
        assert!(run.stderr.len() < 2_000, "{what}: a short message\n{run}");
        sandbox
            .upkeep(&["run", "deep", "--dry-run"])
            .code(2)
            .stderr_has("deep.yaml:2:");
    }
    // A deep block mapping, by indentation.
    let mut text = String::from("steps:\n- run: 'true'\n  with:\n");
    for level in 0..DEPTH / 100 {
        text.push_str(&format!("{}k{level}:\n", " ".repeat(level + 4)));
    }
    sandbox.pipeline("deep", &text);
    sandbox
        .upkeep(&["validate", "deep"])
        .code(2)
        .stderr_has("nested more than 64 levels deep");
}

#[test]
fn an_upkeep_yaml_nested_100000_levels_deep_is_bad_input() {
    let sandbox = Sandbox::new();
    for (what, value) in deep_values() {
        sandbox.write(
            "upkeep.yaml",
            &format!("databases:\n  production:\n    {value}x\n"),
        );
        for args in [&["check", "production"][..], &["validate"][..]] {
            let run = sandbox.upkeep(args);
            run.code(2)
                .stderr_has("upkeep.yaml:3:")
                .stderr_has("nested more than 64 levels deep");
            assert!(run.stderr.len() < 2_000, "{what}: a short message\n{run}");
        }
    }
    sandbox.write("upkeep.yaml", &format!("{}x\n", "- ".repeat(DEPTH)));
    sandbox
        .upkeep(&["check", "production"])
        .code(2)
        .stderr_has("upkeep.yaml:1:");
}

#[test]
fn a_byte_order_mark_is_accepted_and_positions_stay_right() {
    let sandbox = Sandbox::new();
    sandbox.write("upkeep.yaml", &format!("\u{FEFF}{CONFIG}"));
    sandbox.upkeep(&["check", "production"]).code(0);
    sandbox.write(
        "upkeep.yaml",
        "\u{FEFF}# saved by a Windows editor\r\ndatabases:\r\n  production: data/prod.duckdb\r\n",
    );
    sandbox.upkeep(&["check", "production"]).code(0);
    sandbox.write(
        "upkeep.yaml",
        "\u{FEFF}databasez:\n  production: data/prod.duckdb\n",
    );
    sandbox
        .upkeep(&["check", "production"])
        .code(2)
        .stderr_has("upkeep.yaml:1:1: unknown field `databasez`");
    sandbox.write("upkeep.yaml", &format!("\u{FEFF}{CONFIG}"));
    sandbox.pipeline(
        "bom",
        "\u{FEFF}env: production\r\nsteps:\r\n  - uses: integrity\r\n",
    );
    sandbox.upkeep(&["run", "bom"]).code(0);
    sandbox.pipeline("bom", "\u{FEFF}stepz: []\n");
    sandbox
        .upkeep(&["validate", "bom"])
        .code(2)
        .stderr_has("bom.yaml:1:1: unknown key `stepz`");
}

#[test]
fn text_that_is_not_utf8_is_refused_where_it_is() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("upkeep.yaml"),
        b"databases:\n  production: data/\xffprod.duckdb\n",
    )
    .unwrap();
    sandbox
        .upkeep(&["check", "production"])
        .code(2)
        .stderr_has("upkeep.yaml:2:20: not UTF-8 text");
    std::fs::write(
        sandbox.path("upkeep.yaml"),
        b"\xef\xbb\xbfdatabases: \xc3(\n",
    )
    .unwrap();
    sandbox
        .upkeep(&["check", "production"])
        .code(2)
        .stderr_has("upkeep.yaml:1:12: not UTF-8 text");
    std::fs::write(sandbox.path("upkeep.yaml"), b"\xff\xfed\x00b\x00").unwrap();
    sandbox
        .upkeep(&["check", "production"])
        .code(2)
        .stderr_has("upkeep.yaml:1:1: the file is UTF-16");
    sandbox.write("upkeep.yaml", CONFIG);
    std::fs::create_dir_all(sandbox.path("pipelines")).unwrap();
    std::fs::write(sandbox.path("pipelines/bad.yaml"), b"steps:\n- run: \xc3\n").unwrap();
    sandbox
        .upkeep(&["validate", "bad"])
        .code(2)
        .stderr_has("bad.yaml:2:8: not UTF-8 text");
}

/// upkeep.yaml with every path key set, one a line.
const ALL_PATHS: &str = "\
databases:
  production: data/prod.duckdb
  staging: data/staging.duckdb
backups:
  dir: backups
schema: schema.sql
state_dir: .upkeep
";

#[test]
fn a_path_left_empty_is_refused_with_its_key_and_position() {
    let sandbox = Sandbox::new();
    sandbox.write("upkeep.yaml", ALL_PATHS);
    sandbox.upkeep(&["check", "production"]).code(0);
    // (line, the key as it is written, the dotted key)
    let keys = [
        (2, "  production:", "databases.production"),
        (3, "  staging:", "databases.staging"),
        (5, "  dir:", "backups.dir"),
        (6, "schema:", "schema"),
        (7, "state_dir:", "state_dir"),
    ];
    for (line, key, dotted) in keys {
        for value in [
            "~",
            "null",
            "",
            "''",
            "\"\"",
            "'   '",
            "~/data.duckdb",
            "'~'",
        ] {
            let text: String = ALL_PATHS
                .lines()
                .enumerate()
                .map(|(i, text)| match i + 1 == line {
                    true => format!("{key} {value}\n"),
                    false => format!("{text}\n"),
                })
                .collect();
            sandbox.write("upkeep.yaml", &text);
            let run = sandbox.upkeep(&["check", "production"]);
            run.code(2)
                .stderr_has(&format!("upkeep.yaml:{line}:"))
                .stderr_has(&format!("`{dotted}`: "));
            assert!(
                run.stderr.contains("no path given") || run.stderr.contains("is not expanded"),
                "{run}"
            );
        }
    }
    // The column is the value's.
    sandbox.write(
        "upkeep.yaml",
        "databases:\n  production: ''\n  staging: data/staging.duckdb\n",
    );
    sandbox
        .upkeep(&["check", "staging"])
        .code(2)
        .stderr_has("upkeep.yaml:2:15: `databases.production`: no path given");
    // A folder is no database file.
    for folder in [".", "data/", "data/..", "data/."] {
        sandbox.write(
            "upkeep.yaml",
            &format!("databases:\n  production: '{folder}'\n"),
        );
        sandbox
            .upkeep(&["check", "production"])
            .code(2)
            .stderr_has("upkeep.yaml:2:15: `databases.production`: ")
            .stderr_has("names a folder");
    }
    sandbox.write(
        "upkeep.yaml",
        &format!("{CONFIG}schema: .\n").replace("schema: schema.sql\n", ""),
    );
    sandbox
        .upkeep(&["check", "production"])
        .code(2)
        .stderr_has("upkeep.yaml:6:9: `schema`: `.` names a folder");
}

#[test]
fn an_empty_with_value_is_refused() {
    let sandbox = Sandbox::new();
    sandbox.pipeline(
        "p",
        "env: production\nsteps:\n- uses: migrate\n  with: { dir: '' }\n",
    );
    sandbox
        .upkeep(&["validate", "p"])
        .code(2)
        .stderr_has("p.yaml:4:")
        .stderr_has("`dir` is empty");
    // Empty once the variable is filled in: refused at run time, before
    // anything is touched.
    std::fs::create_dir_all(sandbox.path("migrations")).unwrap();
    sandbox.write("migrations/0001_x.sql", "CREATE TABLE x (id INTEGER);");
    sandbox.pipeline(
        "p",
        "env: production\nvars: { DIR: '' }\nsteps:\n- uses: migrate\n  with: { dir: '${DIR}' }\n",
    );
    let run = sandbox.upkeep(&["run", "p"]);
    assert!(
        run.stdout.contains("`with: { dir }` is empty")
            || run.stderr.contains("`with: { dir }` is empty"),
        "{run}"
    );
    assert!(!counts(&sandbox.db("prod")).contains_key("x"), "{run}");
}

#[test]
fn other_location_less_errors_get_a_place() {
    let sandbox = Sandbox::new();
    for (text, expected) in [
        ("", "upkeep.yaml:1:1: the file is empty"),
        ("# only a comment\n", "upkeep.yaml:1:1: the file is empty"),
        (
            "databases:\n  production: data/prod.duckdb\n---\nschema: x\n",
            "upkeep.yaml:3:1: a second YAML document",
        ),
        ("databases: {}\n", "`databases` names no environment"),
        (
            "databases:\n  production: data/prod.duckdb\nbackups:\n  keep: lots\n",
            "upkeep.yaml:4:9: `backups.keep`: must be a whole number of at least 1, not `lots`",
        ),
    ] {
        sandbox.write("upkeep.yaml", text);
        sandbox
            .upkeep(&["check", "production"])
            .code(2)
            .stderr_has(expected);
    }
}

#[test]
fn a_key_given_twice_is_refused() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "upkeep.yaml",
        "databases:\n  production: data/prod.duckdb\n  production: data/staging.duckdb\n",
    );
    sandbox.upkeep(&["check", "production"]).code(2).stderr_has(
        "upkeep.yaml:3:3: `production` is given twice in `databases` (first at line 2)",
    );
    sandbox.write("upkeep.yaml", CONFIG);
    sandbox.pipeline(
        "p",
        "vars:\n  A: one\n  A: two\nsteps:\n- run: echo \"$A\"\n",
    );
    sandbox
        .upkeep(&["validate", "p"])
        .code(2)
        .stderr_has("p.yaml:3:3: `A` is given twice in `vars`");
}
