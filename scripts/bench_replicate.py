#!/usr/bin/env python3
"""Continuous off-site copies (`upkeep replicate`): bytes and requests per
hour, and the lag from a commit to its being off-site.

Usage: bench_replicate.py [--minutes M] [--size GIB] [--rate R] [WORK_DIR]

A database of GIB GiB (default 1; scripts/make_big_db.py, the official
DuckDB 2.0) is held by scripts/bench_app.py, a small web app: R commits a
second (default 1; single-row inserts) and a CHECKPOINT every minute, as
its automatic ones would come. `upkeep replicate` ships it to a real S3
server on loopback (s3s-fs, from scripts/test_tools.sh) every second, with
a new point at least every 5 minutes. Once the first point is up (the
seed, a whole upload once), M minutes (default 10) are measured:

- bytes sent and PUTs, per hour, from replicate's JSON (`--format json`);
- the baseline, in the same run: the bytes of one whole-file `upkeep push`
  of the same database, which hourly pushes would send every hour;
- the lag of each commit: from its end (bench_app's log) to the report of
  the first round that read the `.wal` after it (its `read_at`), which is
  when that round's upload had finished (or the point that held it).
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("work", nargs="?", metavar="WORK_DIR",
                    default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "upkeep-bench-replicate"))
parser.add_argument("--minutes", type=float, default=10.0)
parser.add_argument("--size", type=float, default=1.0, metavar="GIB")
parser.add_argument("--rate", type=float, default=1.0, help="commits a second (default 1)")
options = parser.parse_args()

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/upkeep-target"))
tools = os.environ.get("UPKEEP_TOOLS", os.path.expanduser("~/.cache/upkeep-tools"))
venv_python = os.path.join(target, "bench-venv", "bin", "python")
bench = os.path.join(os.environ.get("TMPDIR", "/tmp"), "upkeep-bench")
work = options.work

subprocess.run(["cargo", "build", "--quiet", "--bins"], cwd=root, check=True,
               env=dict(os.environ, CARGO_TARGET_DIR=target))
upkeep = os.path.join(target, "debug", "upkeep")
if not os.path.exists(venv_python):
    subprocess.run(["python3", "-m", "venv", os.path.dirname(os.path.dirname(venv_python))], check=True)
    subprocess.run([os.path.join(os.path.dirname(venv_python), "pip"), "install", "--quiet", "duckdb==2.0.0"],
                   check=True)
big = os.path.join(bench, "data", "big.duckdb" if options.size == 1 else f"big{options.size:g}.duckdb")
if not os.path.exists(big) or os.path.getsize(big) < options.size * (1 << 30):
    os.makedirs(os.path.dirname(big), exist_ok=True)
    subprocess.run([venv_python, os.path.join(root, "scripts", "make_big_db.py"), big, str(options.size)], check=True)

KEY_ID, SECRET, BUCKET = "AKIABENCH0001", "bench-secret-0123456789", "bench"
shutil.rmtree(work, ignore_errors=True)
os.makedirs(os.path.join(work, "data"))
os.makedirs(os.path.join(work, "store", BUCKET))
db = os.path.join(work, "data", "big.duckdb")
shutil.copyfile(big, db)
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = subprocess.Popen([os.path.join(tools, "bin", "s3s-fs"), "--host", "127.0.0.1", "--port", str(port),
                           "--access-key", KEY_ID, "--secret-key", SECRET, os.path.join(work, "store")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
        break
    except OSError:
        time.sleep(0.05)
env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION="us-east-1",
           AWS_EC2_METADATA_DISABLED="true", AWS_SHARED_CREDENTIALS_FILE="/nonexistent", NO_COLOR="1")
with open(os.path.join(work, "upkeep.yaml"), "w") as f:
    f.write(f"databases:\n  production: data/big.duckdb\nbackups:\n  dir: backups\n  keep: 1\n"
            f"  offsite:\n    url: s3://{BUCKET}/bench\n    endpoint: http://127.0.0.1:{port}\n")


def store_bytes():
    total = 0
    for folder, _, files in os.walk(os.path.join(work, "store")):
        total += sum(os.path.getsize(os.path.join(folder, name)) for name in files)
    return total


# The baseline: one whole-file push of the same database (the app not yet
# running), what an hourly push sends every hour.
subprocess.run([upkeep, "backup", "production"], cwd=work, env=env, check=True, capture_output=True)
before = store_bytes()
subprocess.run([upkeep, "push", "production"], cwd=work, env=env, check=True, capture_output=True)
push_bytes = store_bytes() - before
shutil.rmtree(os.path.join(work, "backups"))

latencies = os.path.join(work, "commits.txt")
app = subprocess.Popen([venv_python, os.path.join(root, "scripts", "bench_app.py"), db, latencies,
                        str(options.rate), "60"], stdout=subprocess.PIPE, text=True)
app.stdout.readline()
out = open(os.path.join(work, "replicate.jsonl"), "w+")
replicate = subprocess.Popen([upkeep, "--format", "json", "replicate", "production", "--interval", "1s",
                              "--point-every", "5m"], cwd=work, env=env, stdout=out,
                             stderr=subprocess.DEVNULL)


def events():
    out.flush()
    with open(out.name) as f:
        return [json.loads(line) for line in f if line.startswith("{")]


while not any(e.get("kind") == "point" for e in events()):
    if replicate.poll() is not None:
        sys.exit(f"replicate stopped: {replicate.returncode}")
    time.sleep(0.2)
seeded = len(events())
start_wall = time.time()
print(f"seeded: {events()[0]['bytes'] / (1 << 30):.2f} GiB in the first point; measuring {options.minutes:g} min",
      file=sys.stderr)
time.sleep(options.minutes * 60)
end_wall = time.time()
# Measured window over: stop the app, then the replicator (it ships what
# is pending, then exits).
app.send_signal(15)
app.wait()
replicate.send_signal(15)
replicate.wait()
server.terminate()

measured = events()[seeded:]


def parse_time(text):
    # RFC 3339 with nanoseconds and Z, as upkeep prints it.
    from datetime import datetime, timezone
    text = text.rstrip("Z")
    whole, _, fraction = text.partition(".")
    seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return seconds + (float("0." + fraction) if fraction else 0.0)


window = [e for e in measured if parse_time(e["at"]) <= end_wall]
hours = (end_wall - start_wall) / 3600
sent = sum(e.get("bytes", 0) for e in window)
puts = sum(e.get("puts", 0) for e in window)
points = sum(1 for e in window if e["kind"] == "point")
segments = sum(1 for e in window if e["kind"] == "segment")

# Lag: each commit that ended in the window, to the first round that read
# the .wal after it ended (a segment's read_at; a point's report).
offset = time.time() - time.monotonic()
ends = []
with open(latencies) as f:
    for line in f:
        started, latency = map(float, line.split())
        end = started + latency + offset
        if start_wall <= end <= end_wall - 5:
            ends.append(end)
rounds = sorted((parse_time(e["read_at"]) if e["kind"] == "segment" else parse_time(e["at"]) - 1e-9,
                 parse_time(e["at"])) for e in window if e["kind"] in ("segment", "point"))
lags = []
for end in ends:
    shipped = next((reported for read, reported in rounds if read >= end), None)
    if shipped is not None:
        lags.append(shipped - end)
lags.sort()
pct = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] if lags else float("nan")

print(f"{options.minutes:g} minutes measured after the seed; {len(ends)} commits; "
      f"{points} new point(s), {segments} segment(s)\n")
print("| measure | upkeep replicate | baseline | ratio | budget |")
print("| --- | --- | --- | --- | --- |")
per_hour = sent / hours
print(f"| bytes uploaded per hour | {per_hour / (1 << 20):.2f} MiB | {push_bytes / (1 << 20):.0f} MiB "
      f"(one whole-file push an hour) | 1/{push_bytes / max(per_hour, 1):.0f} | <= 1/20 |")
print(f"| PUTs per hour | {puts / hours:.0f} | 1 push (multipart) | | reported |")
print(f"| lag from commit to off-site, p50 / p99 / max | {pct(0.5):.2f} / {pct(0.99):.2f} / "
      f"{(lags[-1] if lags else float('nan')):.2f} s | | | p99 <= interval (1 s) + 2 s |")
print(f"\ncommits without a round after them in the window: {len(ends) - len(lags)}")
