#!/usr/bin/env python3
"""Downtime of a whole update with a 1 GiB database, against its baseline.

Measured in the same run:
  downtime of `upkeep run update` (app stopped -> app healthy: the sum of
  the step durations from `stop app` to `start app`, which waits until healthy)
    vs  one `cp` (+ sync) of the database + the app's own restart
    (budget: <= 1.5x);
  the database part of a rollback (migrate's undo: the backup put back)
    vs  one `cp` (+ sync) of the file (budget: <= 1x), in both cases:
    a migration that fails (the file is rewound in place), and a release
    whose app does not start after migrating (a verified copy, the migrated
    file kept aside).

Usage: scripts/bench_update.py [WORK_DIR]   (run scripts/bench_db.sh once
first: it makes the 1 GiB database this script reuses)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/upkeep-target"))
work = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ.get("TMPDIR", "/tmp"), "upkeep-bench-update")
big = os.path.join(os.environ.get("TMPDIR", "/tmp"), "upkeep-bench", "data", "big.duckdb")
if not os.path.exists(big):
    sys.exit(f"no {big}: run scripts/bench_db.sh first, it makes the 1 GiB database")

subprocess.run(["cargo", "build", "--quiet", "--bin", "upkeep"], cwd=root, check=True,
               env=dict(os.environ, CARGO_TARGET_DIR=target))
upkeep = os.path.join(target, "debug", "upkeep")
shutil.rmtree(work, ignore_errors=True)
demo = subprocess.run([upkeep, "demo", "--dir", work], capture_output=True, text=True)
if demo.returncode != 0:
    sys.exit(demo.stdout + demo.stderr)
port = re.search(r"running on 127\.0\.0\.1:(\d+)", demo.stdout).group(1)
app = os.path.join(work, "app")
env = dict(os.environ, APP_PORT=port, APP_BIN=os.path.join(work, "app-bin"),
           APP_URL=f"http://127.0.0.1:{port}", UPKEEP_DB=os.path.join(app, "backend", "data.duckdb"))
variables = []
for name in ("APP_PORT", "APP_BIN", "APP_URL"):
    variables += ["--var", f"{name}={env[name]}"]

# The demo app on the 1 GiB database (its schema is not the demo's).
db = env["UPKEEP_DB"]
for suffix in ("", ".wal"):
    if os.path.exists(db + suffix):
        os.remove(db + suffix)
shutil.copy(big, db)
with open(os.path.join(app, "upkeep.yaml"), "w") as config:
    config.write("databases:\n  production: backend/data.duckdb\nbackups:\n  dir: backend/backups\n  keep: 2\n"
                 f"app:\n  stop: ./stop.sh\n  start: APP_BIN={env['APP_BIN']} APP_PORT={port} ./start.sh\n"
                 f"  health: {{ url: 'http://127.0.0.1:{port}/health', timeout: 3s }}\n")
# A local change of the bench's own, not one for git-pull to refuse.
subprocess.run(["git", "-C", app, "update-index", "--assume-unchanged", "upkeep.yaml"], check=True)
subprocess.run(["sync"])


def healthy():
    import socket
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=1) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return b" 200 " in s.recv(64)
    except OSError:
        return False


def restart():
    """The app's own restart: stop.sh, start.sh, until /health answers."""
    start = time.perf_counter()
    subprocess.run(["sh", "stop.sh"], cwd=app, env=env, check=True)
    subprocess.run(["sh", "start.sh"], cwd=app, env=env, check=True)
    while not healthy():
        time.sleep(0.005)
    return time.perf_counter() - start


def cp():
    copy = os.path.join(work, "copy.duckdb")
    start = time.perf_counter()
    subprocess.run(["cp", db, copy], check=True)
    subprocess.run(["sync"], check=True)
    took = time.perf_counter() - start
    os.remove(copy)
    subprocess.run(["sync"])
    return took


def git(*args, cwd):
    subprocess.run(["git", "-C", cwd, *args], check=True, capture_output=True,
                   env=dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x",
                            GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x"))


def release(n, sql, start=None):
    dev = os.path.join(work, "dev")
    with open(os.path.join(dev, "VERSION"), "w") as f:
        f.write(f"bench{n}")
    with open(os.path.join(dev, "backend", "migrations", f"{100 + n:04d}_bench.sql"), "w") as f:
        f.write(sql)
    if start is not None:
        with open(os.path.join(dev, "start.sh"), "w") as f:
            f.write(start)
    git("add", "-A", cwd=dev)
    git("commit", "-q", "-m", f"bench{n}", cwd=dev)
    git("push", "-q", cwd=dev)


def update(*extra):
    run = subprocess.run([upkeep, "--format", "json", "run", "update", *variables, *extra],
                         cwd=app, capture_output=True, text=True)
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return run.returncode, events


subprocess.run(["sh", "start.sh"], cwd=app, env=env, check=True)
while not healthy():
    time.sleep(0.01)
# The demo's last release was broken: take it back out of origin.
git("revert", "--no-edit", "HEAD", cwd=os.path.join(work, "dev"))
git("push", "-q", cwd=os.path.join(work, "dev"))

def undo_time(events):
    return [e["duration_ms"] / 1000 for e in events
            if e["type"] == "rollback_finished" and "migrate" in e["name"]]


def back_in_line():
    """Puts origin (and so the app, after an update) back on working code."""
    git("revert", "--no-edit", "HEAD", cwd=os.path.join(work, "dev"))
    git("push", "-q", cwd=os.path.join(work, "dev"))
    code, events = update()
    if code != 0:
        sys.exit(f"the update back to working code failed ({code}): {events[-1]}")


rounds = 5
downtimes, baselines, undos, copies, cps = [], [], [], [], []
for n in range(rounds):
    baselines.append(cp() + restart())
    cps.append(cp())
    release(3 * n, f"CREATE TABLE IF NOT EXISTS bench_{n} (i INTEGER);")
    code, events = update()
    if code != 0:
        sys.exit(f"update failed ({code}): {events[-1]}")
    steps = [e for e in events if e["type"] == "step_finished"]
    downtimes.append(sum(e["duration_ms"] for e in steps) / 1000)
    # A release whose migration fails: migrate's undo rewinds the file.
    release(3 * n + 1, "SELECT no_such_column FROM no_such_table;")
    code, events = update()
    if code != 1:
        sys.exit(f"the failing update exited {code}")
    undos += undo_time(events)
    back_in_line()
    # A release that migrates, then does not start: the backup is copied
    # back, the migrated file kept aside.
    release(3 * n + 2, f"CREATE TABLE bench_s{n} (i INTEGER);", start="#!/bin/sh\nexit 0\n")
    code, events = update()
    if code != 1:
        sys.exit(f"the update that cannot start exited {code}")
    copies += undo_time(events)
    while not healthy():
        time.sleep(0.01)
    back_in_line()

subprocess.run(["sh", "stop.sh"], cwd=app, env=env)
best = min(downtimes)
base = min(baselines)
print(f"database: {os.path.getsize(db) / (1 << 30):.2f} GiB, {rounds} rounds, best of each\n")
print("| measure | upkeep | baseline | ratio | budget |")
print("| --- | --- | --- | --- | --- |")
print(f"| update downtime (stop app -> healthy) vs cp+sync + app restart | {best:.3f} s | {base:.3f} s | {best / base:.2f}x | <= 1.5x |")
for label, times in (("a failed migration: rewound in place", undos),
                     ("the app did not start: copied back, migrated file kept aside", copies)):
    if not times:
        sys.exit(f"no rollback measured for: {label}")
    print(f"| database part of a rollback ({label}) vs cp+sync | {min(times):.3f} s | {min(cps):.3f} s | {min(times) / min(cps):.2f}x | <= 1x |")
