#!/usr/bin/env bash
# Benchmark of the database toolkit on a DuckDB file of at least 1 GiB.
#
# Measured in the same run, on the same file:
#   upkeep backup (verified)  vs  cp + sync of the file       (budget: <= 1.5x)
#   upkeep check              (not deep)                        (budget: < 1 s)
#   upkeep check --deep       vs  DuckDB reading every column   (budget: <= 1.3x)
#   peak memory (max RSS) of backup and check                   (budget: <= 300 MiB)
#
# Usage: scripts/bench_db.sh [SIZE_GIB] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-1}"
work="${2:-${TMPDIR:-/tmp}/upkeep-bench}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/upkeep-target}"

cargo build --quiet --bin upkeep
upkeep="$CARGO_TARGET_DIR/debug/upkeep"

venv="$CARGO_TARGET_DIR/bench-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet duckdb==2.0.0
fi
py="$venv/bin/python"

mkdir -p "$work/data"
db="$work/data/big.duckdb"
if [ ! -f "$db" ] || [ "$(stat -c %s "$db")" -lt "$(python3 -c "print(int($size * (1 << 30)))")" ]; then
  "$py" scripts/make_big_db.py "$db" "$size"
fi
cat > "$work/upkeep.yaml" <<YAML
databases:
  production: data/big.duckdb
backups:
  dir: backups
  keep: 2
YAML

# Runs a command, prints "seconds max_rss_mib".
measure() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
elapsed = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
if code != 0:
    sys.exit(f"command failed ({code}): {' '.join(sys.argv[1:])}")
print(f"{elapsed:.3f} {rss:.0f}")
PY
}

scan_all() {
  "$py" - "$db" <<'PY'
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
for (schema, table) in con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall():
    con.execute(f'SELECT count(*), bit_xor(hash(COLUMNS(*))) FROM "{schema}"."{table}"').fetchall()
PY
}
export -f scan_all
export py db

sync
rounds=3
echo "file: $db ($(du -h "$db" | cut -f1)), $rounds rounds, best of each"
best() { sort -n | head -1; }

cp_times=(); backup_times=(); backup_rss=0
for _ in $(seq $rounds); do
  rm -rf "$work/copy.duckdb" "$work/backups"; sync
  cp_times+=("$(measure bash -c "cp '$db' '$work/copy.duckdb' && sync" | cut -d' ' -f1)")
  rm -f "$work/copy.duckdb"; sync
  read -r t rss < <(measure "$upkeep" --quiet --config "$work/upkeep.yaml" backup production)
  backup_times+=("$t"); [ "${rss%.*}" -gt "$backup_rss" ] && backup_rss="${rss%.*}"
done
cp_best=$(printf '%s\n' "${cp_times[@]}" | best)
backup_best=$(printf '%s\n' "${backup_times[@]}" | best)

check_times=(); check_rss=0; deep_times=(); deep_rss=0; scan_times=()
for _ in $(seq $rounds); do
  read -r t rss < <(measure "$upkeep" --quiet --config "$work/upkeep.yaml" check production)
  check_times+=("$t"); [ "${rss%.*}" -gt "$check_rss" ] && check_rss="${rss%.*}"
  read -r t rss < <(measure "$upkeep" --quiet --config "$work/upkeep.yaml" check production --deep)
  deep_times+=("$t"); [ "${rss%.*}" -gt "$deep_rss" ] && deep_rss="${rss%.*}"
  scan_times+=("$(measure bash -c scan_all | cut -d' ' -f1)")
done
check_best=$(printf '%s\n' "${check_times[@]}" | best)
deep_best=$(printf '%s\n' "${deep_times[@]}" | best)
scan_best=$(printf '%s\n' "${scan_times[@]}" | best)

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
cat <<REPORT

| measure | upkeep | baseline | ratio | budget |
| --- | --- | --- | --- | --- |
| backup (verified) vs cp + sync | ${backup_best} s | ${cp_best} s | $(ratio "$backup_best" "$cp_best")x | <= 1.5x |
| check (not deep) | ${check_best} s | | | < 1 s |
| check --deep vs DuckDB reading every column | ${deep_best} s | ${scan_best} s | $(ratio "$deep_best" "$scan_best")x | <= 1.3x |
| peak memory: backup | ${backup_rss} MiB | | | <= 300 MiB |
| peak memory: check / check --deep | ${check_rss} / ${deep_rss} MiB | | | <= 300 MiB |
REPORT
