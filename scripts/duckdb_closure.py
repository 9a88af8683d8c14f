#!/usr/bin/env python3
"""Guards the DuckDB build: prints what DuckDB's build script is compiled
from (the crates, versions and features of its host dependencies), or with
--check compares that with scripts/duckdb_closure.txt.

Any change there (a new dependency that turns on a feature of `syn` or
`serde` for the host, say) recompiles libduckdb-sys's build script, which
then compiles DuckDB from source again: about 27 minutes on two cores, on
every machine with a warm cache. CI fails fast on such a change; if it is
wanted, update the file (`scripts/duckdb_closure.py > scripts/duckdb_closure.txt`)
and say so.

Usage: scripts/duckdb_closure.py [--check]
"""
import json
import os
import subprocess
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
graph = subprocess.run(
    ["cargo", "build", "--unit-graph", "-Z", "unstable-options"],
    cwd=root, check=True, capture_output=True, text=True,
    env=dict(os.environ, RUSTC_BOOTSTRAP="1"),
).stdout
units = json.loads(graph)["units"]
start = [i for i, unit in enumerate(units)
         if "libduckdb-sys" in unit["pkg_id"] and unit["target"]["kind"] == ["custom-build"]
         and unit["mode"] == "build"]
seen, stack = set(), list(start)
while stack:
    i = stack.pop()
    if i not in seen:
        seen.add(i)
        stack += [dep["index"] for dep in units[i]["dependencies"]]
lines = sorted({
    f"{units[i]['pkg_id'].split('#')[-1]} {units[i]['target']['name']} [{','.join(units[i]['features'])}]"
    for i in seen
})
text = "\n".join(lines) + "\n"
if "--check" not in sys.argv:
    sys.stdout.write(text)
    sys.exit(0)
expected_path = os.path.join(root, "scripts", "duckdb_closure.txt")
expected = open(expected_path).read()
if expected != text:
    sys.stderr.write(
        "The dependencies DuckDB's build script is compiled from have changed: DuckDB would be compiled\n"
        "again (about 27 minutes on two cores). If that is wanted, run\n"
        "  scripts/duckdb_closure.py > scripts/duckdb_closure.txt\n"
        "and say so in the change. The difference:\n")
    old, new = set(expected.splitlines()), set(lines)
    for line in sorted(old - new):
        sys.stderr.write(f"  - {line}\n")
    for line in sorted(new - old):
        sys.stderr.write(f"  + {line}\n")
    sys.exit(1)
print(f"DuckDB's build inputs are unchanged ({len(lines)} units)")
