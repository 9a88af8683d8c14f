#!/usr/bin/env bash
# Benchmark of the pipeline engine's own overhead and of the CLI's start-up.
#
# Measured in the same run:
#   upkeep run of 50 steps `run: "true"`  vs  bash running `sh -c true` 50 times  (budget: <= 1.5x)
#   upkeep --version wall time, best and median of 20                          (budget: < 20 ms)
#
# Each run writes its journal and log under WORK_DIR/.upkeep/: that is part of the cost.
#
# Usage: scripts/bench_pipeline.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-${TMPDIR:-/tmp}/upkeep-bench-pipeline}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/upkeep-target}"

upkeep="$CARGO_TARGET_DIR/debug/upkeep"
# Up to date with the sources (a no-op when it is; DuckDB is built once).
cargo build --quiet --bin upkeep

steps=50
rounds=5
version_rounds=20

rm -rf "$work"
mkdir -p "$work/pipelines"
cat > "$work/upkeep.yaml" <<YAML
databases:
  production: data.duckdb
YAML
{
  echo "name: bench"
  echo "env: production"
  echo "steps:"
  for _ in $(seq $steps); do echo '  - run: "true"'; done
} > "$work/pipelines/bench.yaml"

# Runs a command ROUNDS times, prints the seconds of each run on one line.
measure() {
  python3 - "$@" <<'PY'
import subprocess, sys, time
rounds, cmd = int(sys.argv[1]), sys.argv[2:]
times = []
for _ in range(rounds):
    start = time.perf_counter()
    code = subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode
    times.append(time.perf_counter() - start)
    if code != 0:
        sys.exit(f"command failed ({code}): {' '.join(cmd)}")
print(" ".join(f"{t:.6f}" for t in times))
PY
}
best() { tr ' ' '\n' | sort -n | head -1; }
median() { tr ' ' '\n' | sort -n | python3 -c "import statistics, sys; print(f'{statistics.median(float(l) for l in sys.stdin):.6f}')"; }
ms() { python3 -c "print(f'{$1 * 1000:.1f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

run_cmd=("$upkeep" --quiet --config "$work/upkeep.yaml" run bench)
loop_cmd=(bash -c "for _ in \$(seq $steps); do sh -c true; done")

# Warm-up (page cache, first journal), not counted.
"${run_cmd[@]}" > /dev/null
"${loop_cmd[@]}"

echo "$steps steps, $rounds rounds, best of each (interleaved); --version: $version_rounds runs"
run_times=""; loop_times=""
for _ in $(seq $rounds); do
  run_times+=" $(measure 1 "${run_cmd[@]}")"
  loop_times+=" $(measure 1 "${loop_cmd[@]}")"
done
run_best=$(echo $run_times | best)
loop_best=$(echo $loop_times | best)

version_times=$(measure $version_rounds "$upkeep" --version)
version_best=$(echo "$version_times" | best)
version_median=$(echo "$version_times" | median)

cat <<REPORT

| measure | upkeep | baseline | ratio | budget |
| --- | --- | --- | --- | --- |
| run: $steps steps \`true\` vs bash loop of \`sh -c true\` | $(ms "$run_best") ms | $(ms "$loop_best") ms | $(ratio "$run_best" "$loop_best")x | <= 1.5x |
| --version (best / median of $version_rounds) | $(ms "$version_best") / $(ms "$version_median") ms | | | < 20 ms |
REPORT
