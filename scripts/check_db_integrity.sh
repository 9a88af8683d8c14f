#!/usr/bin/env bash
# Integrity report of the app's databases: the old entry point, now
# `upkeep check ENV [--deep]`; see _upkeep.sh for how it finds upkeep and
# upkeep.yaml. Exit 0: sound; 1: problems found; 2: bad arguments; 4: the
# database is open in another process.
set -euo pipefail

usage() {
  echo "usage: $(basename "$0") production|staging|both [--deep]" >&2
  exit 2
}

env=""
deep=()
while [ $# -gt 0 ]; do
  case "$1" in
    production | staging | both) [ -z "$env" ] || usage; env=$1 ;;
    --deep) deep=(--deep) ;;
    *) usage ;;
  esac
  shift
done
[ -n "$env" ] || usage

. "$(dirname "${BASH_SOURCE[0]}")/_upkeep.sh"
run_upkeep check "$env" ${deep[@]+"${deep[@]}"}
