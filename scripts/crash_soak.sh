#!/usr/bin/env bash
# Crash soak: kill -9 upkeep at random moments, then `upkeep recover`, and
# check that what the user had is still there.
#
#   scripts/crash_soak.sh [N]        N trials per scenario (default 20)
#
# Scenarios: `upkeep backup`, `upkeep restore`, `upkeep repair` (killed after
# a random delay within the command's own duration), and `upkeep run update`
# (killed a random moment after a chosen step or rollback starts, as the
# journal shows it: every step is aimed at, pull and rollbacks included; half
# the releases carry a failing migration, so that the rollback runs; half
# the kills take upkeep's whole process group, git with it).
#
# After each trial:
#   - `upkeep recover` exits 0;
#   - no committed row is lost (rows committed to the .wal only, by an app
#     killed with -9, are counted before each trial);
#   - every `*_data_*.duckdb` in the backups folder has a manifest, whose
#     blake3 matches the file;
#   - update: the app is healthy, on the old release with the old schema or
#     on the new release with the new one; the work tree is clean; a second
#     `upkeep run update` is not refused and ends as the release says.
#
# Prints one figure line per scenario (trials, converged, failures, and how
# many kills landed before the command's end) and exits
# non-zero on any failure, keeping the failed trials' folders for a look.
#
# Environment: UPKEEP_BIN (default: target/debug/upkeep, built by cargo),
# CRASH_SOAK_SHORT=1 (one trial per scenario: the test suite's mode),
# CRASH_SOAK_DIR (where to work; default: a new temporary folder),
# CRASH_SOAK_SCENARIOS (default: "backup restore repair update").
set -u

here=$(cd "$(dirname "$0")/.." && pwd)
trials=${1:-20}
[ "${CRASH_SOAK_SHORT:-}" = 1 ] && trials=1
case $trials in '' | *[!0-9]*) echo "crash_soak: N must be a number, not \`$trials\`" >&2; exit 2 ;; esac
upkeep=${UPKEEP_BIN:-}
if [ -z "$upkeep" ]; then
  target=${CARGO_TARGET_DIR:-$here/target}
  upkeep=$target/debug/upkeep
  [ -x "$upkeep" ] || (cd "$here" && cargo build --quiet --bin upkeep) || exit 2
fi
[ -x "$upkeep" ] || { echo "crash_soak: \`$upkeep\` is not an executable: set UPKEEP_BIN" >&2; exit 2; }
upkeep=$(cd "$(dirname "$upkeep")" && pwd)/$(basename "$upkeep")
for tool in git jq setsid timeout curl; do
  command -v "$tool" > /dev/null || { echo "crash_soak: needs \`$tool\`" >&2; exit 2; }
done
work=${CRASH_SOAK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/upkeep-soak-XXXXXX")}
mkdir -p "$work"
scenarios=${CRASH_SOAK_SCENARIOS:-backup restore repair update}
export NO_COLOR=1 GIT_AUTHOR_NAME=soak GIT_AUTHOR_EMAIL=soak@example.com \
  GIT_COMMITTER_NAME=soak GIT_COMMITTER_EMAIL=soak@example.com
unset UPKEEP_CONFIG ENVIRONMENT GITHUB_ACTIONS GITHUB_STEP_SUMMARY

log() { echo "crash_soak: $*" >&2; }

# --- the base sandbox: `upkeep demo` (app v2 on its data, an origin, a dev
# clone), built once and copied for each trial.
base=$work/base
if [ ! -d "$base/app" ]; then
  "$upkeep" demo --dir "$base" > "$work/demo.log" 2>&1 || { log "upkeep demo failed: see $work/demo.log"; exit 2; }
fi

random_ms() { echo $((RANDOM * 32768 + RANDOM)) | awk -v max="$1" '{ print $1 % (max + 1) }'; }
sleep_ms() { sleep "$(awk -v ms="$1" 'BEGIN { printf "%.3f", ms / 1000 }')"; }
free_port() { echo $((20000 + (RANDOM * 32768 + RANDOM) % 40000)); }

# A trial's sandbox: a copy of the base, its remotes pointing at its own
# origin. Sets $t (folder), $app, $db, $port, $vars.
new_trial() {
  t=$work/$1-$2
  rm -rf "$t"
  cp -a "$base" "$t"
  app=$t/app
  db=$app/backend/data.duckdb
  git -C "$app" remote set-url origin "$t/origin.git"
  git -C "$t/dev" remote set-url origin "$t/origin.git"
  port=$(free_port)
  vars=(--var "APP_URL=http://127.0.0.1:$port" --var "APP_PORT=$port"
    --var "APP_BIN=$t/app-bin" --var "HEALTH_TIMEOUT=20s")
  # The app's lifecycle (`app:` in upkeep.yaml) on this trial's port and
  # binary: a local change of the soak's own, not one for git-pull to refuse.
  sed -i -e "s|APP_BIN=[^ ]* APP_PORT=[0-9]*|APP_BIN=$t/app-bin APP_PORT=$port|" \
    -e "s|127\.0\.0\.1:[0-9]*/health|127.0.0.1:$port/health|" "$app/upkeep.yaml"
  git -C "$app" update-index --assume-unchanged upkeep.yaml
}

in_app() { (cd "$app" && env APP_PORT="$port" APP_BIN="$t/app-bin" UPKEEP_DB="$db" "$@"); }
start_app() { in_app sh start.sh; }
stop_app() { in_app sh stop.sh; }

# The users row count upkeep's read-only check sees (the .wal included).
users() {
  (cd "$app" && "$upkeep" check production --format json 2> /dev/null) |
    jq -r 'select(.type == "check") | (.report.tables[]? | select(.table == "users") | .rows) // "none"' | head -1
}
migrations() {
  (cd "$app" && "$upkeep" check production --format json 2> /dev/null) |
    jq -r 'select(.type == "check") | ([.report.tables[]? | select(.table == "upkeep_migrations") | .rows] | first) // 0' | head -1
}
sound() {
  (cd "$app" && "$upkeep" check production --deep --format json 2> /dev/null) |
    jq -e -s 'map(select(.type == "check")) | .[0].ok' > /dev/null
}

# Commits rows to the .wal only: an app writes them, then is killed with -9.
wal_rows() {
  local fifo=$t/ready
  rm -f "$fifo" && mkfifo "$fifo"
  "$t/app-bin" write "$db" "INSERT INTO users (email) SELECT 'soak' || i || '@example.com' FROM range($1) r(i)" > "$fifo" 2>> "$t/writer.log" &
  local writer=$!
  read -r -t 30 _ < "$fifo"
  kill -9 "$writer" 2> /dev/null
  wait "$writer" 2> /dev/null
  rm -f "$fifo"
}

# Every file named like a backup has a manifest whose blake3 matches.
backups_named_rightly() {
  local file manifest
  for file in "$app"/backend/backups/*_data_*.duckdb; do
    [ -e "$file" ] || continue
    manifest=$file.manifest.json
    if [ ! -f "$manifest" ]; then
      fail "backup-named file without a manifest: $file"
      return 1
    fi
    if [ "$(jq -r .blake3 "$manifest")" != "$("$t/app-bin" blake3 "$file")" ]; then
      fail "backup-named file whose blake3 differs from its manifest: $file"
      return 1
    fi
  done
}

problem=
fail() { [ -n "$problem" ] || problem=$*; }

# Runs upkeep ARGS in the background in its own process group; kills it
# with -9 (it alone, or its whole group) when `when` says so.
killed_run() {
  local when=$1 group=$2
  shift 2
  (cd "$app" && exec setsid "$upkeep" "$@" > "$t/run.log" 2>&1) &
  local pid=$!
  $when "$pid"
  if [ "$group" = 1 ]; then kill -9 -- "-$pid" 2> /dev/null; else kill -9 "$pid" 2> /dev/null; fi
  wait "$pid" 2> /dev/null
  # 137: killed before it ended (else it had ended before the kill).
  [ $? = 137 ] && midway=$((midway + 1))
}

after_random_ms() { sleep_ms "$(random_ms "$limit_ms")"; }

# Waits until the journal shows `$aim` (a step or a rollback starting), or
# the run ends; then a random moment more.
after_aim() {
  local pid=$1 waited=0
  while kill -0 "$pid" 2> /dev/null && [ $waited -lt 1200 ]; do
    if cat "$app"/.upkeep/runs/*.jsonl 2> /dev/null | grep -q "$aim"; then
      sleep_ms "$(random_ms "$limit_ms")"
      return
    fi
    sleep 0.01
    waited=$((waited + 1))
  done
}

recover() {
  if ! (cd "$app" && timeout 180 "$upkeep" recover > "$t/recover.log" 2>&1); then
    fail "recover did not exit 0 ($(tail -3 "$t/recover.log" | tr '\n' ' '))"
    return 1
  fi
}

# --- scenarios. Each sets up the trial, kills, recovers, checks.

trial_backup() {
  stop_app
  wal_rows 7
  local before
  before=$(users)
  killed_run after_random_ms "$((RANDOM % 2))" backup production
  recover || return
  backups_named_rightly || return
  [ "$(users)" = "$before" ] || { fail "users: $before committed, $(users) after recover"; return; }
  (cd "$app" && "$upkeep" backup production > "$t/again.log" 2>&1) || { fail "a second backup failed"; return; }
  backups_named_rightly || return
  local newest
  newest=$(ls "$app"/backend/backups/production_data_*.duckdb | sort | tail -1)
  [ "$(jq -r .tables.users "$newest.manifest.json")" = "$before" ] ||
    fail "the backup after recover does not hold the $before users"
}

trial_restore() {
  stop_app
  # An older backup B, then more rows checkpointed (by a backup), then rows
  # in the .wal only: the restore of B must keep all of them aside.
  (cd "$app" && "$upkeep" backup production > /dev/null 2>&1) || { fail "setup backup failed"; return; }
  local b old
  b=$(basename "$(ls "$app"/backend/backups/production_data_*.duckdb | sort | tail -1)")
  old=$(users)
  sleep 1.1
  wal_rows 5
  (cd "$app" && "$upkeep" backup production > /dev/null 2>&1) || { fail "setup backup failed"; return; }
  wal_rows 7
  local before
  before=$(users)
  killed_run after_random_ms "$((RANDOM % 2))" restore production "$b"
  recover || return
  backups_named_rightly || return
  local now
  now=$(users)
  if [ "$now" != "$before" ] && [ "$now" != "$old" ]; then
    fail "users: $before before the restore, $old in the backup, $now after recover"
    return
  fi
  (cd "$app" && "$upkeep" restore production "$b" > "$t/again.log" 2>&1) || { fail "restore after recover failed"; return; }
  [ "$(users)" = "$old" ] || { fail "users after a full restore: $(users), not $old"; return; }
  # The data replaced is kept aside, the .wal's rows included.
  local kept=0 aside
  for aside in "$app"/backend/aside/*/data.duckdb; do
    [ -e "$aside" ] || continue
    printf 'databases:\n  production: %s\n' "$aside" > "$t/probe.yaml"
    local rows
    rows=$("$upkeep" --config "$t/probe.yaml" check production --format json 2> /dev/null |
      jq -r 'select(.type == "check") | .report.tables[]? | select(.table == "users") | .rows')
    [ "$rows" = "$before" ] && kept=1
  done
  [ $kept = 1 ] || fail "no database kept aside holds the $before users the restore replaced"
}

trial_repair() {
  stop_app
  (cd "$app" && "$upkeep" backup production > /dev/null 2>&1) || { fail "setup backup failed"; return; }
  local good
  good=$(users)
  # Damage: the file cut in its second half.
  local size
  size=$(stat -c %s "$db")
  truncate -s $((size * 2 / 3)) "$db"
  cp "$db" "$t/damaged.copy"
  killed_run after_random_ms "$((RANDOM % 2))" repair production
  recover || return
  backups_named_rightly || return
  (cd "$app" && "$upkeep" repair production > "$t/again.log" 2>&1) || { fail "repair after recover failed"; return; }
  sound || { fail "the database is not sound after repair"; return; }
  [ "$(users)" = "$good" ] || { fail "users after repair: $(users), not the backup's $good"; return; }
  local found=0 q
  for q in "$app"/backend/quarantine/*/data.duckdb; do
    [ -e "$q" ] && cmp -s "$q" "$t/damaged.copy" && found=1
  done
  [ $found = 1 ] || fail "the damaged file is not in quarantine byte for byte"
}

# The steps of pipelines/update.yaml, by index; a rollback runs for those
# with one (pending's fetch, stop-app, pull, migrate, start-app).
update_aims=(
  '"event":"step_started","step":0,' '"event":"step_started","step":1,'
  '"event":"step_started","step":2,' '"event":"step_started","step":3,'
  '"event":"step_started","step":5,' '"event":"step_started","step":6,'
  '"event":"step_started","step":7,' '"event":"step_started","step":8,'
  '"event":"step_undo","step":0,' '"event":"step_undo","step":1,'
  '"event":"step_undo","step":6,' '"event":"step_undo","step":7,'
  '"event":"step_undo","step":8,'
  '"event":"rollback_started","step":7}'
  '"event":"rollback_started","step":6}' '"event":"rollback_started","step":1}'
)

trial_update() {
  # The app runs v2 with rows in its .wal; origin gets v4: a good or a
  # failing migration (the failing one makes the rollback run).
  stop_app
  wal_rows 9
  start_app
  local bad=$((RANDOM % 2)) old_head before_users
  before_users=$(health_body | sed -n 's/.*users=\([0-9]*\).*/\1/p')
  [ -n "$before_users" ] || { fail "the app did not start before the update"; return; }
  old_head=$(git -C "$app" rev-parse HEAD)
  (
    cd "$t/dev" || exit 1
    git rm -q backend/migrations/0002_broken.sql
    echo v4 > VERSION
    if [ $bad = 1 ]; then
      printf 'ALTER TABLE orders ADD COLUMN shipped BOOLEAN;\nUPDATE orders SET shipped = no_such_column;\n' > backend/migrations/0003_ship.sql
    else
      printf 'ALTER TABLE orders ADD COLUMN shipped BOOLEAN;\nUPDATE orders SET shipped = false;\n' > backend/migrations/0003_ship.sql
    fi
    git add -A && git commit -q -m v4 && git push -q
  ) || { fail "cannot push the release"; return; }
  local new_head
  new_head=$(git -C "$t/dev" rev-parse HEAD)
  aim=${update_aims[$((RANDOM % ${#update_aims[@]}))]}
  echo "$aim bad=$bad" > "$t/aim"
  killed_run after_aim "$((RANDOM % 2))" run update --yes "${vars[@]}"
  recover || return
  backups_named_rightly || return
  converged_update "$old_head" "$new_head" "$before_users" || return
  # A second update is not refused, and ends as the release says.
  local expect=0
  [ $bad = 1 ] && expect=1
  (cd "$app" && timeout 180 "$upkeep" run update --yes "${vars[@]}" > "$t/again.log" 2>&1)
  local code=$?
  [ $code = $expect ] || { fail "the update after recover exited $code, not $expect ($(tail -2 "$t/again.log" | tr '\n' ' '))"; return; }
  converged_update "$old_head" "$new_head" "$before_users"
}

# The body of the app's /health, waiting up to 20 s for it to answer.
health_body() {
  local i body
  for i in $(seq 1 200); do
    body=$(curl -s --max-time 1 "http://127.0.0.1:$port/health") && [ -n "$body" ] && { echo "$body"; return; }
    sleep 0.1
  done
}

# Old code on old data, or new code on new data; clean tree; healthy; rows.
converged_update() {
  local old_head=$1 new_head=$2 before_users=$3 head body=
  head=$(git -C "$app" rev-parse HEAD)
  if [ -n "$(git -C "$app" status --porcelain --untracked-files=no)" ]; then
    fail "uncommitted changes in the work tree after recover: $(git -C "$app" status --porcelain | head -3 | tr '\n' ' ')"
    return 1
  fi
  body=$(health_body)
  [ -n "$body" ] || { fail "the app is not healthy after recover"; return 1; }
  stop_app
  local applied rows
  applied=$(migrations)
  rows=$(users)
  start_app
  case $head in
    "$old_head") [ "$applied" = 1 ] && [[ $body == v2* ]] || { fail "old code ($body) with $applied migration(s) applied"; return 1; } ;;
    "$new_head") [ "$applied" = 2 ] && [[ $body == v4* ]] || { fail "new code ($body) with $applied migration(s) applied"; return 1; } ;;
    *) fail "HEAD is on neither the old nor the new release: $head"; return 1 ;;
  esac
  [ "$rows" = "$before_users" ] || { fail "users: $before_users before, $rows after"; return 1; }
}

# Measures an uncut run of a command, for the random delays.
measure() {
  local started ended
  started=$(date +%s%N)
  "$@" > /dev/null 2>&1
  ended=$(date +%s%N)
  echo $(((ended - started) / 1000000))
}

status=0
for scenario in $scenarios; do
  converged=0 failures=0 midway=0
  case $scenario in
    update) limit_ms=400 ;;
    *)
      new_trial "$scenario" measure
      stop_app
      case $scenario in
        backup) limit_ms=$(cd "$app" && measure "$upkeep" backup production) ;;
        restore)
          (cd "$app" && "$upkeep" backup production > /dev/null 2>&1)
          limit_ms=$(cd "$app" && measure "$upkeep" restore production --latest)
          ;;
        repair)
          truncate -s $(($(stat -c %s "$db") * 2 / 3)) "$db"
          limit_ms=$(cd "$app" && measure "$upkeep" repair production)
          ;;
      esac
      rm -rf "$t"
      limit_ms=$((limit_ms + limit_ms / 5 + 5))
      ;;
  esac
  for i in $(seq 1 "$trials"); do
    new_trial "$scenario" "$i"
    problem=
    "trial_$scenario"
    stop_app > /dev/null 2>&1
    if [ -z "$problem" ]; then
      converged=$((converged + 1))
      rm -rf "$t"
    else
      failures=$((failures + 1))
      log "$scenario trial $i: $problem (kept in $t)"
    fi
  done
  echo "crash soak: $scenario: trials $trials, converged $converged, failures $failures (killed before the end: $midway)"
  [ $failures = 0 ] || status=1
done
[ -n "${CRASH_SOAK_DIR:-}" ] || [ $status != 0 ] || rm -rf "$work"
exit $status
