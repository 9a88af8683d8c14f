#!/usr/bin/env bash
# The whole test suite on a new machine, as the README's second command:
# installs what the end-to-end tests drive besides upkeep (Debian packages,
# ansible-core, actionlint, s3s-fs, SeaweedFS: see scripts/test_tools.sh),
# then runs `cargo test` with them on PATH. Arguments go to `cargo test`
# (`bash scripts/test.sh offsite` runs the off-site tests only).
#
# A plain `cargo test` is the quick loop once the tools are installed;
# without them, the tests that drive them (tests/cli/ansible.rs, offsite*.rs,
# workflows.rs) fail with the command that installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

# DuckDB is compiled from source once per target dir: share it between
# clones, as .ci/run does.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/upkeep-target}"

eval "$(bash scripts/test_tools.sh)"
exec cargo test "$@"
