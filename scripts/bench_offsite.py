#!/usr/bin/env python3
"""Off-site copies of a 1 GiB backup against s3s-fs on loopback, each ratio
against its baseline in the same round:

  upkeep push                 vs  boto3 upload_file            (budget: <= 1.3x)
  upkeep push, encrypted      vs  boto3 upload_file            (budget: <= 1.6x)
  upkeep restore --offsite    vs  boto3 download_file into the backups folder,
                                  then upkeep restore of that file, back to back
                                  (budget: <= 1.3x)
  peak memory (max RSS) of push and restore --offsite          (budget: < 300 MiB)

Usage: scripts/bench_offsite.py [ROUNDS] [WORK_DIR]
(run scripts/bench_db.sh once first: it makes the 1 GiB database reused
here; scripts/test_tools.sh installs s3s-fs and boto3).
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/upkeep-target"))
tools = os.environ.get("UPKEEP_TOOLS", os.path.expanduser("~/.cache/upkeep-tools"))
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
work = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.environ.get("TMPDIR", "/tmp"), "upkeep-bench-offsite")
big = os.path.join(os.environ.get("TMPDIR", "/tmp"), "upkeep-bench", "data", "big.duckdb")
if not os.path.exists(big):
    sys.exit(f"no {big}: run scripts/bench_db.sh first, it makes the 1 GiB database")
try:
    import boto3
    from boto3.s3.transfer import TransferConfig
except ImportError:
    sys.exit(f"no boto3: run it with {tools}/venv/bin/python (scripts/test_tools.sh installs it)")

subprocess.run(["cargo", "build", "--quiet", "--bin", "upkeep"], cwd=root, check=True,
               env=dict(os.environ, CARGO_TARGET_DIR=target))
upkeep = os.path.join(target, "debug", "upkeep")
KEY_ID, SECRET, BUCKET = "AKIABENCH0001", "bench-secret-0123456789", "bench"

shutil.rmtree(work, ignore_errors=True)
os.makedirs(os.path.join(work, "data"))
os.makedirs(os.path.join(work, "store", BUCKET))
shutil.copyfile(big, os.path.join(work, "data", "big.duckdb"))
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = subprocess.Popen([os.path.join(tools, "bin", "s3s-fs"), "--host", "127.0.0.1", "--port", str(port),
                           "--access-key", KEY_ID, "--secret-key", SECRET, os.path.join(work, "store")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
endpoint = f"http://127.0.0.1:{port}"
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
        break
    except OSError:
        time.sleep(0.05)
env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION="us-east-1",
           AWS_EC2_METADATA_DISABLED="true", AWS_SHARED_CREDENTIALS_FILE="/nonexistent", NO_COLOR="1")
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                  region_name="us-east-1")
transfer = TransferConfig()  # boto3's defaults: 8 MiB parts, 10 threads

identity = os.path.join(work, "key.txt")
subprocess.run(["age-keygen", "-o", identity], check=True, capture_output=True)
public = subprocess.run(["age-keygen", "-y", identity], check=True, capture_output=True, text=True).stdout.strip()


def config(prefix, encrypted=False):
    path = os.path.join(work, f"upkeep-{prefix}.yaml")
    with open(path, "w") as f:
        f.write(f"databases:\n  production: data/big.duckdb\nbackups:\n  dir: backups\n  keep: 2\n"
                f"  offsite:\n    url: s3://{BUCKET}/{prefix}\n    endpoint: {endpoint}\n")
        if encrypted:
            f.write(f"    encrypt_to: [{public}]\n")
    return path


def measured(args):
    """Runs upkeep under /usr/bin/time; its max RSS in MiB."""
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + args, cwd=work, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return int(out.stderr.strip().splitlines()[-1]) / 1024


def clock(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sync():
    os.sync()


subprocess.run([upkeep, "--config", config("setup"), "backup", "production"], cwd=work, env=env, check=True,
               capture_output=True)
backups = os.path.join(work, "backups")
name = sorted(n for n in os.listdir(backups) if n.endswith(".duckdb"))[-1]
backup = os.path.join(backups, name)
size = os.path.getsize(backup)
print(f"backup {name}: {size / (1 << 30):.2f} GiB; s3s-fs at {endpoint}; {rounds} rounds")

results = {key: [] for key in ("boto_up", "push", "push_enc", "boto_down", "local_restore", "offsite_restore")}
rss = {"push": [], "push_enc": [], "offsite_restore": []}
for r in range(rounds):
    sync()
    results["boto_up"].append(clock(lambda: s3.upload_file(backup, BUCKET, f"boto{r}/{name}", Config=transfer)))
    sync()
    start = time.perf_counter()
    rss["push"].append(measured([upkeep, "--config", config(f"plain{r}"), "push", "production"]))
    results["push"].append(time.perf_counter() - start)
    sync()
    start = time.perf_counter()
    rss["push_enc"].append(measured([upkeep, "--config", config(f"sealed{r}", True), "push", "production"]))
    results["push_enc"].append(time.perf_counter() - start)
    sync()
    # The baseline: boto3 downloads the backup into the backups folder (the
    # local copy moved away, its manifest put back beside the download), and
    # today's local restore restores that file, back to back. Both sides
    # then write the backup and the database, and keep the backup.
    aside = os.path.join(work, "aside")
    os.makedirs(aside, exist_ok=True)
    for suffix in ("", ".manifest.json"):
        os.rename(backup + suffix, os.path.join(aside, name + suffix))
    sync()
    results["boto_down"].append(clock(lambda: s3.download_file(BUCKET, f"boto{r}/{name}", backup, Config=transfer)))
    shutil.copyfile(os.path.join(aside, name + ".manifest.json"), backup + ".manifest.json")
    start = time.perf_counter()
    subprocess.run([upkeep, "--config", config("setup"), "restore", "production", name], cwd=work, env=env,
                   check=True, capture_output=True)
    results["local_restore"].append(time.perf_counter() - start)
    for suffix in ("", ".manifest.json"):
        os.remove(backup + suffix)
    sync()
    start = time.perf_counter()
    rss["offsite_restore"].append(measured([upkeep, "--config", config(f"plain{r}"), "restore", "production",
                                            "--offsite", name]))
    results["offsite_restore"].append(time.perf_counter() - start)
    shutil.rmtree(aside)
    # Restores keep the replaced database aside: drop those, and this
    # round's objects, so the disk holds one round at a time.
    for entry in os.listdir(os.path.join(work, "data")):
        if entry != "big.duckdb" and not entry.startswith("big.duckdb.wal"):
            path = os.path.join(work, "data", entry)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    shutil.rmtree(os.path.join(work, ".upkeep", "aside"), ignore_errors=True)
    for prefix in (f"boto{r}", f"plain{r}", f"sealed{r}"):
        shutil.rmtree(os.path.join(work, "store", BUCKET, prefix), ignore_errors=True)
    print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items()))

server.kill()
med = {k: statistics.median(v) for k, v in results.items()}
gib = size / (1 << 30)


def ratios(measured, *baseline):
    """Each round's ratio to its own baseline: the median, and the worst."""
    each = [m / sum(b) for m, *b in zip(results[measured], *(results[k] for k in baseline))]
    return f"{statistics.median(each):.2f}x (worst {max(each):.2f}x)"


print()
print(f"| what | median of {rounds} rounds | ratio, round by round | budget |")
print("| --- | --- | --- | --- |")
print(f"| boto3 upload_file | {med['boto_up']:.2f} s ({gib / med['boto_up']:.2f} GiB/s) | | |")
print(f"| upkeep push | {med['push']:.2f} s | {ratios('push', 'boto_up')} | <= 1.3x |")
print(f"| upkeep push, encrypted | {med['push_enc']:.2f} s | {ratios('push_enc', 'boto_up')} | <= 1.6x |")
print(f"| boto3 download_file, then upkeep restore of it | {med['boto_down']:.2f} + {med['local_restore']:.2f} s | | |")
print(f"| upkeep restore --offsite | {med['offsite_restore']:.2f} s | {ratios('offsite_restore', 'boto_down', 'local_restore')} | <= 1.3x |")
for key, values in rss.items():
    print(f"| peak memory, {key} | {max(values):.0f} MiB | | < 300 MiB |")
shutil.rmtree(work, ignore_errors=True)
