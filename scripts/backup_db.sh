#!/usr/bin/env bash
# Verified, rotated backup of the app's databases: the old entry point, kept
# so that existing cron entries such as
#   0 2 * * * /path/to/scripts/backup_db.sh both >> /path/to/backups/backup.log 2>&1
# keep working. It runs `upkeep backup ENV [--keep=N]`; see _upkeep.sh for
# how it finds upkeep and upkeep.yaml. Exit codes are upkeep's (0 ok,
# 1 failed, 2 bad input, 4 busy); wrong arguments exit 2.
# New installs: `upkeep schedule --install` writes the cron line itself.
set -euo pipefail

usage() {
  echo "usage: $(basename "$0") production|staging|both [--keep=N]" >&2
  exit 2
}

env=""
keep=()
while [ $# -gt 0 ]; do
  case "$1" in
    production | staging | both) [ -z "$env" ] || usage; env=$1 ;;
    --keep=*) keep=("$1") ;;
    --keep) [ $# -ge 2 ] || usage; keep=("--keep=$2"); shift ;;
    *) usage ;;
  esac
  shift
done
[ -n "$env" ] || usage

. "$(dirname "${BASH_SOURCE[0]}")/_upkeep.sh"
run_upkeep backup "$env" ${keep[@]+"${keep[@]}"}
