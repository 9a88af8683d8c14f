#!/usr/bin/env bash
# Live-copy soak: the torture test of tests/cli/live_copy.rs with N copies
# in each storage format (v2.0.0 and v1.0.0), a writer committing its mixed
# workload meanwhile. Every copy is opened with DuckDB and must hold exactly
# the state after one transaction within its bounds; `upkeep check --deep`
# runs on every CHECK_EVERY-th copy.
#
#   scripts/live_soak.sh [--xfs] [N] [CHECK_EVERY]    (defaults 2500 and 10)
#
# --xfs: on a loop-mounted XFS with reflink (root, xfsprogs), where each
# copy is a clone of the file (FICLONE) instead of a read.
#
# Prints, per format, how many copies were kept (and cloned), the attempts
# they took, those refused (no consistent copy within the bound: a
# fallback), the naive copies of the control and how many were wrong, then
# the test's verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/upkeep-target}"
if [ "${1:-}" = "--xfs" ]; then
  shift
  xfs="$(mktemp -d)"
  truncate -s 4G "$xfs/xfs.img"
  mkfs.xfs -q -m reflink=1 "$xfs/xfs.img"
  mkdir "$xfs/mnt"
  mount -o loop "$xfs/xfs.img" "$xfs/mnt"
  trap 'umount "$xfs/mnt"; rm -rf "$xfs"' EXIT
  export TMPDIR="$xfs/mnt"
fi
export UPKEEP_LIVE_COPIES="${1:-2500}"
export UPKEEP_LIVE_CHECK_EVERY="${2:-10}"
cargo test --test cli -- live_copy::live_copies_of --nocapture --test-threads 1 2>&1 \
  | grep -E '^live copies|^  naive|^test |test result|panicked'
