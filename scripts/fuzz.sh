#!/usr/bin/env bash
# Long fuzzing runs of upkeep's parsers: upkeep.yaml, pipeline files, DuckDB
# headers and backup manifests (tests/cli/fuzz.rs; the test suite runs a
# short round of the same).
#
#   scripts/fuzz.sh [ITERATIONS] [SEED]
#
# ITERATIONS cases per parser (default 200000) from SEED (default: from the
# clock, printed so that a failure can be replayed). A failure prints the
# seed, the case number and the input; replay one case with
#   UPKEEP_FUZZ_SEED=SEED UPKEEP_FUZZ_CASE=N cargo test --test cli fuzz::
# A case that kills the process (a stack overflow has no panic message)
# leaves its input in fuzz-NAME.last in the target's tmp folder.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: $(basename "$0") [ITERATIONS] [SEED]" >&2
  exit 2
}
[ $# -le 2 ] || usage
iterations=${1:-200000}
seed=${2:-$(date +%s)}
[[ $iterations =~ ^[0-9]+$ ]] || usage
[[ $seed =~ ^(0x[0-9a-fA-F]+|[0-9]+)$ ]] || usage

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/upkeep-target}"
echo "fuzzing: $iterations cases per parser, seed $seed"
status=0
UPKEEP_FUZZ_ITERATIONS=$iterations UPKEEP_FUZZ_SEED=$seed \
  cargo test --test cli fuzz:: -- --nocapture --test-threads 4 || status=$?
if [ "$status" -ne 0 ]; then
  echo "fuzzing failed (seed $seed); inputs of the last cases:" >&2
  ls -l "$CARGO_TARGET_DIR"/tmp/fuzz-*.last >&2 || true
fi
exit "$status"
