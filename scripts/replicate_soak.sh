#!/usr/bin/env bash
# Continuous-copies soak: the torture test of tests/cli/offsite_points.rs
# (`a_restore_at_any_moment_holds_exactly_the_commits_made_before_it`) run
# for SECONDS instead of 15. The live-copy writer commits its mixed
# workload (single rows, bulk inserts past a row group, spread updates,
# deletes, ALTER TABLE, manual and automatic checkpoints) while points are
# taken every time its `.wal` ends, each one a live copy onto the last
# (only the blocks whose stored checksum changed are read), and segments
# are shipped every 20 ms. Then MOMENTS moments spread over the run, and
# as many halfway between two shipments, are restored on "a new machine"
# (each point's file checked against its blake3, its segments replayed by
# DuckDB) and compared with the exact commits they must hold.
#
#   scripts/replicate_soak.sh [SECONDS] [MOMENTS]    (defaults 600 and 1000)
#
# Prints the shipments, the points and the blocks they sent, the moments
# restored and verified, and the test's verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/upkeep-target}"
eval "$(bash scripts/test_tools.sh)"
export UPKEEP_REPLICATE_SECONDS="${1:-600}"
export UPKEEP_REPLICATE_MOMENTS="${2:-1000}"
cargo test --test cli -- offsite_points::a_restore_at_any_moment --nocapture --test-threads 1 2>&1 \
  | grep -E 'shipments over|^test |test result|panicked'
