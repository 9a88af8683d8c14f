#!/usr/bin/env python3
"""Backups of a running app: downtime, measured by a health prober.

Downtime = from the last successful health probe before the app stops to
the first one after it is back (a probe every 5 ms). Measured in the same
run, on the demo app serving a database of SIZE GiB:

  ext4 (or whatever WORK_DIR is on):
    window backup  vs  ./stop.sh; cp DB /tmp/x; ./start.sh until healthy
    (budget: <= 1.1x)
  a loop-mounted XFS with reflink (root only; 1 GiB and 4 GiB):
    window backup downtime  vs  the app's own restart (budget: restart + 100 ms)
    the update's downtime (its backup is a clone too)
  snapshot hook: failed probes during the backup (budget: 0)
  peak memory (max RSS) of every upkeep command run (budget: < 300 MiB)

Usage: scripts/bench_live.py [WORK_DIR]   (run scripts/bench_db.sh once
first: it makes the 1 GiB database; the 4 GiB one is made here)
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/upkeep-target"))
work = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ.get("TMPDIR", "/tmp"), "upkeep-bench-live")
bench = os.path.join(os.environ.get("TMPDIR", "/tmp"), "upkeep-bench")
big = os.path.join(bench, "data", "big.duckdb")
if not os.path.exists(big):
    sys.exit(f"no {big}: run scripts/bench_db.sh first, it makes the 1 GiB database")
subprocess.run(["cargo", "build", "--quiet", "--bins"], cwd=root, check=True,
               env=dict(os.environ, CARGO_TARGET_DIR=target))
upkeep = os.path.join(target, "debug", "upkeep")
venv_python = os.path.join(target, "bench-venv", "bin", "python")
peak_rss = []


class Prober:
    """GET /health every 5 ms; the longest run of failures, and their count."""

    def __init__(self, port):
        self.port, self.stop, self.results = port, False, []
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def healthy(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
                return answer.startswith(b"HTTP/1.1 200 ")
        except OSError:
            return False

    def run(self):
        while not self.stop:
            self.results.append((time.perf_counter(), self.healthy()))
            time.sleep(0.005)

    def finish(self):
        self.stop = True
        self.thread.join()
        failures = sum(1 for _, ok in self.results if not ok)
        downtime, last_ok, down = 0.0, None, False
        for at, ok in self.results:
            if ok:
                if down and last_ok is not None:
                    downtime = max(downtime, at - last_ok)
                last_ok, down = at, False
            else:
                down = True
        return downtime, failures, len(self.results)


def run(args, cwd):
    """Runs a command to its end; for upkeep, records its peak memory."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if args[0] == upkeep:
            peak_rss.append((usage.ru_maxrss / 1024, " ".join(args[1:3])))
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(args, child.returncode, out.read(), err.read())


class Site:
    """The demo app in `folder`, on a copy of a database of `size_gib`."""

    def __init__(self, folder, database):
        shutil.rmtree(folder, ignore_errors=True)
        demo = run([upkeep, "demo", "--dir", folder], cwd=root)
        if demo.returncode != 0:
            sys.exit(demo.stdout + demo.stderr)
        self.port = int(re.search(r"running on 127\.0\.0\.1:(\d+)", demo.stdout).group(1))
        self.folder = folder
        self.app = os.path.join(folder, "app")
        self.bin = os.path.join(folder, "app-bin")
        self.db = os.path.join(self.app, "backend", "data.duckdb")
        for suffix in ("", ".wal"):
            if os.path.exists(self.db + suffix):
                os.remove(self.db + suffix)
        shutil.copy(database, self.db)
        self.env = dict(os.environ, APP_PORT=str(self.port), APP_BIN=self.bin, UPKEEP_DB=self.db)
        self.config(snapshot=False)
        # A local change of the bench's own, not one for git-pull to refuse.
        subprocess.run(["git", "-C", self.app, "update-index", "--assume-unchanged", "upkeep.yaml"], check=True)
        self.script("start.sh")
        self.wait()

    def config(self, snapshot):
        text = (
            "databases:\n  production: backend/data.duckdb\nbackups:\n  dir: backend/backups\n  keep: 1\n"
            f"app:\n  stop: ./stop.sh\n  start: APP_BIN={self.bin} APP_PORT={self.port} ./start.sh\n"
            f"  health: {{ url: 'http://127.0.0.1:{self.port}/health', timeout: 60s }}\n"
        )
        if snapshot:
            text += f"  snapshot: {self.bin} snapshot {self.port} \"$UPKEEP_SNAPSHOT\"\n"
        with open(os.path.join(self.app, "upkeep.yaml"), "w") as f:
            f.write(text)

    def script(self, name):
        subprocess.run(["sh", name], cwd=self.app, env=self.env, check=True)

    def wait(self):
        probe = Prober.__new__(Prober)
        probe.port = self.port
        while not probe.healthy():
            time.sleep(0.005)

    def measure(self, action):
        subprocess.run(["sync"])
        prober = Prober(self.port)
        time.sleep(0.05)
        result = action()
        self.wait()
        time.sleep(0.05)
        downtime, failures, probes = prober.finish()
        return downtime, failures, probes, result

    def baseline(self):
        copy = os.path.join(tempfile.gettempdir(), "upkeep-bench-live-copy")

        def act():
            self.script("stop.sh")
            subprocess.run(["cp", self.db, copy], check=True)
            self.script("start.sh")

        measured = self.measure(act)
        os.remove(copy)
        return measured

    def restart(self):
        return self.measure(lambda: (self.script("stop.sh"), self.script("start.sh")))

    def backup(self):
        def act():
            done = run([upkeep, "backup", "production"], cwd=self.app)
            if done.returncode != 0:
                sys.exit(f"backup failed: {done.stdout}{done.stderr}")
            return done.stdout.strip()

        return self.measure(act)

    def update(self, n):
        dev = os.path.join(self.folder, "dev")
        git = lambda *a: subprocess.run(["git", "-C", dev, *a], check=True, capture_output=True,
                                        env=dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x",
                                                 GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x"))
        if n == 0:
            # The demo's last release was broken: take it back out of origin.
            git("revert", "--no-edit", "HEAD")
        with open(os.path.join(dev, "backend", "migrations", f"{100 + n:04d}_bench.sql"), "w") as f:
            f.write(f"CREATE TABLE bench_{n} (i INTEGER);")
        git("add", "-A")
        git("commit", "-q", "-m", f"bench{n}")
        git("push", "-q")

        def act():
            done = run([upkeep, "run", "update", "--yes"], cwd=self.app)
            if done.returncode != 0:
                sys.exit(f"update failed: {done.stdout}{done.stderr}")

        return self.measure(act)

    def close(self):
        self.script("stop.sh")


def best(measures):
    return min(m[0] for m in measures)


rows = []
rounds = 3
site = Site(os.path.join(work, "ext4"), big)
size = os.path.getsize(site.db) / (1 << 30)
kind = subprocess.run(["df", "--output=fstype", work], capture_output=True, text=True).stdout.split()[-1]
base = [site.baseline() for _ in range(rounds)]
window = [site.backup() for _ in range(rounds)]
rows.append((f"window backup downtime, {size:.2f} GiB on {kind}, vs stop; cp DB /tmp/x; start until healthy",
             best(window), best(base), f"{best(window) / best(base):.2f}x", "<= 1.1x"))
site.config(snapshot=True)
hook = [site.backup() for _ in range(rounds)]
rows.append(("snapshot-hook backup: failed health probes (of probes sent)",
             f"{sum(m[1] for m in hook)} of {sum(m[2] for m in hook)}", "", "", "0"))
site.close()

xfs_reason = None
if os.geteuid() != 0:
    xfs_reason = "not root"
elif not shutil.which("mkfs.xfs"):
    xfs_reason = "no mkfs.xfs (Debian's xfsprogs)"
if xfs_reason is None:
    big4 = os.path.join(bench, "data", "big4.duckdb")
    if not os.path.exists(big4):
        subprocess.run([venv_python, os.path.join(root, "scripts", "make_big_db.py"), big4, "4"], check=True)
    image = os.path.join(bench, "xfs.img")
    mount = os.path.join(bench, "xfs")
    os.makedirs(mount, exist_ok=True)
    subprocess.run(["umount", mount], capture_output=True)
    with open(image, "wb") as f:
        f.truncate(16 << 30)
    subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", image], check=True)
    subprocess.run(["mount", "-o", "loop", image, mount], check=True)
    try:
        for database in (big, big4):
            site = Site(os.path.join(mount, "site"), database)
            gib = os.path.getsize(site.db) / (1 << 30)
            restart = [site.restart() for _ in range(rounds)]
            window = [site.backup() for _ in range(rounds)]
            rows.append((f"window backup downtime, {gib:.2f} GiB on XFS with reflink, vs the app's restart",
                         best(window), best(restart), f"+{(best(window) - best(restart)) * 1000:.0f} ms",
                         "<= restart + 100 ms"))
            update = [site.update(n) for n in range(rounds)]
            rows.append((f"update downtime, {gib:.2f} GiB on XFS with reflink, vs the app's restart",
                         best(update), best(restart), f"+{(best(update) - best(restart)) * 1000:.0f} ms", ""))
            site.close()
            shutil.rmtree(os.path.join(mount, "site"), ignore_errors=True)
    finally:
        subprocess.run(["umount", mount])
        os.remove(image)

print(f"{rounds} rounds, best of each\n")
print("| measure | upkeep | baseline | ratio | budget |")
print("| --- | --- | --- | --- | --- |")
for label, ours, theirs, ratio, budget in rows:
    fmt = lambda v: f"{v:.3f} s" if isinstance(v, float) else str(v)
    print(f"| {label} | {fmt(ours)} | {fmt(theirs)} | {ratio} | {budget} |")
if xfs_reason:
    print(f"\nXFS with reflink: skipped ({xfs_reason})")
top = max(peak_rss)
print(f"\npeak memory of upkeep (max RSS): {top[0]:.0f} MiB ({top[1]}); budget < 300 MiB")
