# shellcheck shell=bash
# Sourced by the old entry points (backup_db.sh, check_db_integrity.sh):
# finds upkeep and the project's upkeep.yaml, then runs upkeep in their place.
#
# upkeep is, in order: $UPKEEP; `upkeep` on PATH; the newest of the release
# and debug builds in ${CARGO_TARGET_DIR:-$HOME/.cache/upkeep-target}.
# The config is $UPKEEP_CONFIG if set, else upkeep.yaml in the folder above
# this script (so cron, which starts in $HOME, finds it), else upkeep's own
# discovery from the current folder.

find_upkeep() {
  if [ -n "${UPKEEP:-}" ]; then
    printf '%s\n' "$UPKEEP"
    return
  fi
  if command -v upkeep >/dev/null 2>&1; then
    command -v upkeep
    return
  fi
  local target="${CARGO_TARGET_DIR:-${HOME:-}/.cache/upkeep-target}" found=""
  for candidate in "$target/release/upkeep" "$target/debug/upkeep"; do
    if [ -x "$candidate" ] && { [ -z "$found" ] || [ "$candidate" -nt "$found" ]; }; then
      found=$candidate
    fi
  done
  if [ -z "$found" ]; then
    echo "upkeep not found: set UPKEEP=/path/to/upkeep, put upkeep on PATH, or build it with cargo" >&2
    return 1
  fi
  printf '%s\n' "$found"
}

# run_upkeep ARG...: runs `upkeep [--config FILE] ARG...` in place of this
# shell, so its exit code is the script's.
run_upkeep() {
  local upkeep here
  upkeep=$(find_upkeep) || exit 1
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  if [ -z "${UPKEEP_CONFIG:-}" ] && [ -f "$here/../upkeep.yaml" ]; then
    exec "$upkeep" --config "$(cd "$here/.." && pwd)/upkeep.yaml" "$@"
  fi
  exec "$upkeep" "$@"
}
