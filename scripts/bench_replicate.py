#!/usr/bin/env python3
"""Continuous off-site copies (`upkeep replicate`): bytes and requests per
hour, and the lag from a commit to its being off-site.

Usage: bench_replicate.py [--minutes M] [--size GIB] [--rate R] [--only-restore] [WORK_DIR]

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
  when that round's upload had finished (or the point that held it);
- replicate's peak memory (VmHWM) over the whole run;
- replicate's CPU once the database is idle: the app stopped (its last
  point shipped), then 60 seconds of rounds that find nothing new;
- `upkeep restore --offsite --at` the moment of the seed point, the oldest
  (a restore reads whole maps, never a chain, so a point's age does not
  matter), against the baseline: a boto3 download of the whole file that
  push sent, then `upkeep restore` of that backup.
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
parser.add_argument("--only-restore", action="store_true",
                    help="reuse WORK_DIR of an earlier run: only the restore figures, best of 3, interleaved")
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
    subprocess.run([venv_python, "-m", "pip", "install", "--quiet", "duckdb==2.0.0"], check=True)
if subprocess.run([venv_python, "-c", "import boto3"], capture_output=True).returncode != 0:
    subprocess.run([venv_python, "-m", "pip", "install", "--quiet", "boto3"], check=True)
big = os.path.join(bench, "data", "big.duckdb" if options.size == 1 else f"big{options.size:g}.duckdb")
if not os.path.exists(big) or os.path.getsize(big) < options.size * (1 << 30):
    os.makedirs(os.path.dirname(big), exist_ok=True)
    subprocess.run([venv_python, os.path.join(root, "scripts", "make_big_db.py"), big, str(options.size)], check=True)

KEY_ID, SECRET, BUCKET = "AKIABENCH0001", "bench-secret-0123456789", "bench"
if options.only_restore:
    with open(os.path.join(work, "upkeep.yaml")) as f:
        port = int(f.read().rsplit(":", 1)[1].strip())
else:
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "data"))
    os.makedirs(os.path.join(work, "store", BUCKET))
    shutil.copyfile(big, os.path.join(work, "data", "big.duckdb"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
db = os.path.join(work, "data", "big.duckdb")
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


def measure_restores(seed_at, rounds=3):
    """Best of `rounds`, interleaved: `upkeep restore --offsite --at` the
    seed point's moment, and the baseline, a boto3 download of the pushed
    whole file then `upkeep restore` of it. Each starts from the same
    state: the restored backup, and the database kept aside, removed."""
    backups = os.path.join(work, "backups")
    offsite, baseline = [], []
    for _ in range(rounds):
        for name in os.listdir(backups):
            if name != pushed_name + ".manifest.json":
                os.remove(os.path.join(backups, name))
        shutil.rmtree(os.path.join(work, "data", "aside"), ignore_errors=True)
        started = time.monotonic()
        subprocess.run([upkeep, "restore", "production", "--offsite", "--at", seed_at], cwd=work, env=env,
                       check=True, capture_output=True)
        offsite.append(time.monotonic() - started)
        for name in os.listdir(backups):
            if name != pushed_name + ".manifest.json":
                os.remove(os.path.join(backups, name))
        shutil.rmtree(os.path.join(work, "data", "aside"), ignore_errors=True)
        download = os.path.join(backups, pushed_name + ".download")
        started = time.monotonic()
        subprocess.run([venv_python, "-c", f"""
import boto3
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:{port}", aws_access_key_id="{KEY_ID}",
                  aws_secret_access_key="{SECRET}", region_name="us-east-1")
s3.download_file("{BUCKET}", "bench/production/{pushed_name}", "{download}")
"""], check=True)
        os.replace(download, os.path.join(backups, pushed_name))
        subprocess.run([upkeep, "restore", "production", pushed_name], cwd=work, env=env, check=True,
                       capture_output=True)
        baseline.append(time.monotonic() - started)
    return min(offsite), min(baseline)


if options.only_restore:
    with open(os.path.join(work, "replicate.jsonl")) as f:
        seed_at = json.loads(f.readline())["at"]
    # The pushed backup: its local manifest from the one off-site.
    remote = os.path.join(work, "store", BUCKET, "bench", "production")
    pushed_name = next(name for name in os.listdir(remote) if name.endswith(".duckdb"))
    with open(os.path.join(remote, pushed_name + ".manifest.json")) as f:
        local = json.load(f)["local"]
    os.makedirs(os.path.join(work, "backups"), exist_ok=True)
    with open(os.path.join(work, "backups", pushed_name + ".manifest.json"), "w") as f:
        json.dump(local, f)
    offsite, baseline = measure_restores(seed_at)
    server.terminate()
    print("| measure | upkeep | baseline | ratio | budget |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| restore --offsite --at the oldest point, best of 3 | {offsite:.2f} s | {baseline:.2f} s "
          f"(boto3 download + upkeep restore) | {offsite / baseline:.2f}x | <= 1.3x |")
    sys.exit(0)

# The baseline: one whole-file push of the same database (the app not yet
# running), what an hourly push sends every hour.
subprocess.run([upkeep, "backup", "production"], cwd=work, env=env, check=True, capture_output=True)
before = store_bytes()
subprocess.run([upkeep, "push", "production"], cwd=work, env=env, check=True, capture_output=True)
push_bytes = store_bytes() - before
pushed_name = next(name for name in os.listdir(os.path.join(work, "backups"))
                   if name.endswith(".duckdb"))
# Kept aside for the restore baseline at the end.
os.rename(os.path.join(work, "backups"), os.path.join(work, "baseline-backups"))

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


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Measured window over: stop the app (it closes its database: a last
# checkpoint, a last point), then measure the replicator idle.
app.send_signal(15)
app.wait()
time.sleep(10)
idle_from, idle_cpu = time.monotonic(), cpu_seconds(replicate.pid)
time.sleep(60)
idle = (cpu_seconds(replicate.pid) - idle_cpu) / (time.monotonic() - idle_from)
with open(f"/proc/{replicate.pid}/status") as f:
    peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) * 1024
# Then the replicator: it ships what is pending, then exits.
replicate.send_signal(15)
replicate.wait()

shutil.rmtree(os.path.join(work, "backups"), ignore_errors=True)
os.rename(os.path.join(work, "baseline-backups"), os.path.join(work, "backups"))
restore_offsite, restore_baseline = measure_restores(events()[0]["at"])
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
print(f"| restore --offsite --at the oldest point, best of 3 | {restore_offsite:.2f} s | {restore_baseline:.2f} s "
      f"(boto3 download + upkeep restore) | {restore_offsite / restore_baseline:.2f}x | <= 1.3x |")
print(f"| replicate's peak memory (VmHWM) | {peak / (1 << 20):.0f} MiB | | | <= 200 MiB |")
print(f"| replicate's CPU, database idle (60 s) | {idle * 100:.2f} % of a core | | | < 1 % |")
print(f"\ncommits without a round after them in the window: {len(ends) - len(lags)}")
