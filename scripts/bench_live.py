#!/usr/bin/env python3
"""Backups of a running app: downtime and live copies, measured by a health prober.

Downtime = from the last successful health probe before the app stops to
the first one after it is back (a probe every 5 ms). Measured in the same
run, on the demo app serving a database of SIZE GiB:

  ext4 (or whatever WORK_DIR is on):
    window backup  vs  ./stop.sh; cp DB /tmp/x; ./start.sh until healthy
    (budget: <= 1.1x)
  a loop-mounted XFS with reflink (root only; SIZE and 4x SIZE GiB):
    window backup downtime  vs  the app's own restart (budget: restart + 100 ms)
  the update (--only-update: SIZE and 4x SIZE GiB, on WORK_DIR's file system
  and on XFS with reflink): its downtime vs the same release by hand, `git
  fetch` first, then ./stop.sh, `git merge --ff-only`, the migration run by
  the official DuckDB, ./start.sh until healthy (budget: <= +150 ms); the
  update takes its restore point live before the stop and tops it up after
  snapshot hook: failed probes during the backup (budget: 0)
  peak memory (max RSS) of every upkeep command run (budget: < 300 MiB)

Live copies (the "live" rows; --only-live runs just these): the app is
scripts/bench_app.py, run with the bench venv's python (the official
DuckDB 2.0 build), which holds a copy of the SIZE GiB database open (so
DuckDB's lock), serves GET /health (200 when `SELECT 1` works) and commits
about 100 single-row transactions a second, recording each commit's start
and latency. upkeep.yaml has no `app:` section (a live backup needs none)
and says `backups: { live: always }`: `live: auto` copies live only a
file in storage version v2.0.0 (which proves a DuckDB 2.0 writer).
make_big_db.py's DuckDB 2.0 writes v2.0.0 by default today, but the rows
must not depend on the file's version: the app here is DuckDB 2.0, so
`always` is true. (The window and hook rows above say `live: never`, or
they would be live copies too.) Each backup is `upkeep backup production
--format json`, and must say `"taken": "live"`. Best of 3, interleaved
with their baselines:

  on WORK_DIR's file system:
    live backup wall time  vs  cp DB COPY && sync of the same file, COPY
    beside the backups (budget: <= 1.3x). upkeep's time includes its
    verification of the copy (DuckDB opens it, replays the copied .wal
    into it, checks it, every byte is hashed), as the budget intends. At
    this rate the app's .wal never reaches DuckDB's autocheckpoint, so it
    grows through the run: each backup replays more commits (the notes
    under the table say how many).
    failed health probes during the live backups (budget: 0)
    the app's commit latency, p50 and p99, of the commits that started
    during a live backup vs during an equal stretch right after it with no
    backup (the prober runs in both), same app run (reported)
  on the XFS with reflink (root only):
    the copy phase of a live backup (`live.copy_seconds` in upkeep's JSON,
    "not reported" while upkeep does not report it; budget: <= 50 ms), and
    the whole backup's wall time
  peak memory of upkeep during the live backups (budget: <= 300 MiB)

Usage: scripts/bench_live.py [--only-live | --only-update] [--size GIB] [WORK_DIR]
The databases are made here with scripts/make_big_db.py when missing
(SIZE 1 is $TMPDIR/upkeep-bench/data/big.duckdb, as scripts/bench_db.sh
makes it), in the venv $CARGO_TARGET_DIR/bench-venv (made when missing).
"""
import argparse
import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("work", nargs="?", metavar="WORK_DIR",
                    default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "upkeep-bench-live"))
parser.add_argument("--only-live", action="store_true", help="run only the live-copy rows")
parser.add_argument("--only-update", action="store_true",
                    help="run only the update rows (SIZE and 4x SIZE, the work dir's file system and XFS)")
parser.add_argument("--size", type=float, default=1.0, metavar="GIB",
                    help="size of the database in GiB (default 1; the XFS window rows also use 4x GIB)")
options = parser.parse_args()

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/upkeep-target"))
work = options.work
os.makedirs(work, exist_ok=True)
bench = os.path.join(os.environ.get("TMPDIR", "/tmp"), "upkeep-bench")
subprocess.run(["cargo", "build", "--quiet", "--bins"], cwd=root, check=True,
               env=dict(os.environ, CARGO_TARGET_DIR=target))
upkeep = os.path.join(target, "debug", "upkeep")
venv = os.path.join(target, "bench-venv")
venv_python = os.path.join(venv, "bin", "python")
app_script = os.path.join(root, "scripts", "bench_app.py")
peak_rss = []


def database(gib):
    """A database of at least `gib` GiB, made by the official DuckDB build."""
    path = os.path.join(bench, "data", "big.duckdb" if gib == 1 else f"big{gib:g}.duckdb")
    if not os.path.exists(path) or os.path.getsize(path) < gib * (1 << 30):
        if not os.path.exists(venv_python):
            subprocess.run(["python3", "-m", "venv", venv], check=True)
            subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--quiet", "duckdb==2.0.0"], check=True)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        subprocess.run([venv_python, os.path.join(root, "scripts", "make_big_db.py"), path, str(gib)], check=True)
    return path


def healthy(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            return answer.startswith(b"HTTP/1.1 200 ")
    except OSError:
        return False


def wait_healthy(port):
    while not healthy(port):
        time.sleep(0.005)


class Prober:
    """GET /health every 5 ms; the longest run of failures, and their count."""

    def __init__(self, port):
        self.port, self.stop, self.results = port, False, []
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.stop:
            self.results.append((time.perf_counter(), healthy(self.port)))
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
        self.released = False
        self.topped_up = []
        self.config(snapshot=False)
        # A local change of the bench's own, not one for git-pull to refuse.
        subprocess.run(["git", "-C", self.app, "update-index", "--assume-unchanged", "upkeep.yaml"], check=True)
        self.script("start.sh")
        self.wait()

    def config(self, snapshot, live="never"):
        text = (
            # live: never, or the window and hook rows would measure live copies
            # (the default, `auto`, copies a v2.0.0 file live): see the live rows.
            # The update rows say `auto`: the update's restore point is a live copy.
            "databases:\n  production: backend/data.duckdb\nbackups:\n  dir: backend/backups\n  keep: 1\n"
            f"  live: {live}\n"
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
        wait_healthy(self.port)

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
            if "copied live" in done.stdout:
                sys.exit(f"a live copy, not the window or hook this row measures: {done.stdout}")
            return done.stdout.strip()

        return self.measure(act)

    def release(self, n):
        """Pushes release n to origin: one migration, CREATE TABLE IF NOT EXISTS
        (a hand update applies it unrecorded; upkeep's next update applies it
        again, harmlessly). Returns the migration's path in the app."""
        dev = os.path.join(self.folder, "dev")
        git = lambda *a: subprocess.run(["git", "-C", dev, *a], check=True, capture_output=True,
                                        env=dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x",
                                                 GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x"))
        if not self.released:
            # The demo's last release was broken: take it back out of origin.
            git("revert", "--no-edit", "HEAD")
            self.released = True
        name = f"{100 + n:04d}_bench.sql"
        with open(os.path.join(dev, "backend", "migrations", name), "w") as f:
            f.write(f"CREATE TABLE IF NOT EXISTS bench_{n} (i INTEGER);")
        git("add", "-A")
        git("commit", "-q", "-m", f"bench{n}")
        git("push", "-q")
        return os.path.join(self.app, "backend", "migrations", name)

    def update_by_hand(self, n):
        """The baseline: the same release by hand, fetched first (as upkeep's
        `pending` does before the stop), then stop, fast-forward, the migration
        (the official DuckDB, as update.sh ran it), start until healthy."""
        migration = self.release(n)
        subprocess.run(["git", "-C", self.app, "fetch", "-q"], check=True)

        def act():
            self.script("stop.sh")
            subprocess.run(["git", "-C", self.app, "merge", "-q", "--ff-only", "@{u}"], check=True)
            subprocess.run([venv_python, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
                            "c.execute(open(sys.argv[2]).read()); c.close()", self.db, migration], check=True)
            self.script("start.sh")

        return self.measure(act)

    def update(self, n):
        self.release(n)

        def act():
            done = run([upkeep, "run", "update", "--yes"], cwd=self.app)
            if done.returncode != 0:
                sys.exit(f"update failed: {done.stdout}{done.stderr}")
            self.topped_up.append("topped up with" in done.stdout)

        return self.measure(act)

    def close(self):
        self.script("stop.sh")


def best(measures):
    return min(m[0] for m in measures)


def fstype(path):
    return subprocess.run(["df", "--output=fstype", path], capture_output=True, text=True).stdout.split()[-1]


def sync():
    subprocess.run(["sync"], check=True)


class LiveSite:
    """scripts/bench_app.py holding a copy of `database` in `folder`, and an
    upkeep.yaml with no `app:` section and `backups.live: always`."""

    def __init__(self, folder, database):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        self.folder = folder
        self.db = os.path.join(folder, "data.duckdb")
        self.backups = os.path.join(folder, "backups")
        self.copy = os.path.join(folder, "cp-copy.duckdb")
        self.commits_file = os.path.join(folder, "commits.txt")
        shutil.copy(database, self.db)
        with open(os.path.join(folder, "upkeep.yaml"), "w") as f:
            f.write("databases:\n  production: data.duckdb\nbackups:\n  dir: backups\n  keep: 1\n  live: always\n")
        self.log = os.path.join(folder, "app.log")
        with open(self.log, "w") as log:
            self.app = subprocess.Popen([venv_python, app_script, self.db, self.commits_file],
                                        stdout=subprocess.PIPE, stderr=log, text=True)
        line = self.app.stdout.readline()
        if not line.strip().isdigit():
            self.app.kill()
            sys.exit(f"the bench app did not start; {self.log}:\n{open(self.log).read()}")
        self.port = int(line)
        wait_healthy(self.port)
        # Its first commits (its table, a new .wal) behind it.
        time.sleep(1)
        self.busy, self.idle_stretches, self.copying, self.rss = [], [], [], []

    def __enter__(self):
        return self

    def __exit__(self, *_):
        if self.app.poll() is None:
            self.app.kill()
            self.app.wait()

    def cp_sync(self):
        """`cp DB COPY && sync`, beside the backups: seconds."""
        sync()
        start = time.monotonic()
        subprocess.run(["sh", "-c", 'cp -- "$1" "$2" && sync', "sh", self.db, self.copy], check=True)
        took = time.monotonic() - start
        self.copying.append((start, start + took))
        os.remove(self.copy)
        return took

    def backup(self):
        """A live backup, probed: (seconds, failed probes, probes, upkeep's `live` object)."""
        shutil.rmtree(self.backups, ignore_errors=True)
        sync()
        prober = Prober(self.port)
        time.sleep(0.05)
        start = time.monotonic()
        done = run([upkeep, "backup", "production", "--format", "json"], cwd=self.folder)
        end = time.monotonic()
        time.sleep(0.05)
        _, failures, probes = prober.finish()
        self.rss.append(peak_rss[-1][0])
        if done.returncode != 0:
            sys.exit(f"live backup failed ({done.returncode}): {done.stdout}{done.stderr}")
        report = next((line for line in map(json.loads, done.stdout.splitlines()) if line.get("type") == "backup"),
                      None)
        if report is None or report.get("taken") != "live":
            sys.exit(f"not a live backup: {done.stdout}{done.stderr}")
        self.busy.append((start, end))
        return end - start, failures, probes, report.get("live") or {}

    def idle(self, seconds):
        """The same stretch with no backup (the prober runs, as during one)."""
        prober = Prober(self.port)
        time.sleep(0.05)
        start = time.monotonic()
        time.sleep(seconds)
        self.idle_stretches.append((start, time.monotonic()))
        time.sleep(0.05)
        prober.finish()

    def close(self):
        """Stops the app: the latencies of its commits during the backups, the idle stretches and cp + sync."""
        self.app.terminate()
        if self.app.wait(timeout=60) != 0:
            sys.exit(f"the bench app failed; {self.log}:\n{open(self.log).read()}")
        with open(self.commits_file) as f:
            commits = [tuple(map(float, line.split())) for line in f]
        within = lambda stretches: [latency for at, latency in commits
                                    if any(a <= at <= b for a, b in stretches)]
        return within(self.busy), within(self.idle_stretches), within(self.copying)


def percentile(values, q):
    """Nearest-rank percentile, in ms."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000


def latencies(values):
    if not values:
        return "no commits"
    return f"{percentile(values, 0.5):.1f} / {percentile(values, 0.99):.1f} ms"


def copy_phase(lives):
    """The best copy phase reported, or why there is none."""
    copies = [live["copy_seconds"] for live in lives if live.get("copy_seconds") is not None]
    return min(copies) if copies else "not reported"


def cloned(lives):
    said = [{True: "yes", False: "no", None: "not reported"}[live.get("cloned")] for live in lives]
    return said[0] if len(set(said)) == 1 else "/".join(said)


def attempts(lives):
    return "/".join(str(live.get("attempts", "?")) for live in lives)


def live_rows(folder, database):
    """The live rows on the file system of `folder`."""
    kind = fstype(os.path.dirname(folder))
    with LiveSite(folder, database) as site:
        gib = os.path.getsize(site.db) / (1 << 30)
        base, live = [], []
        for _ in range(rounds):
            base.append((site.cp_sync(),))
            live.append(site.backup())
            site.idle(live[-1][0])
        during, idle, copying = site.close()
    lives = [m[3] for m in live]
    live_probes.extend(live)
    live_rss.extend(site.rss)
    rows.append((f"live backup wall time, {gib:.2f} GiB on {kind}, app committing ~100/s, vs cp DB COPY && sync",
                 best(live), best(base), f"{best(live) / best(base):.2f}x", "<= 1.3x"))
    rows.append((f"app commit latency p50 / p99, during live backups ({len(during)} commits) vs "
                 f"an equal stretch with no backup ({len(idle)} commits)",
                 latencies(during), latencies(idle), "", "reported"))
    rows.append((f"app commit latency p50 / p99, during cp DB COPY && sync ({len(copying)} commits), for comparison",
                 latencies(copying), "", "", ""))
    notes.append(f"live backups on {kind}: copy phase {fmt(copy_phase(lives))} (best), cloned {cloned(lives)}, "
                 f"attempts {attempts(lives)}, commits from the .wal "
                 f"{'/'.join(str(live.get('wal_commits', '?')) for live in lives)}")


def live_xfs_rows(folder, database):
    with LiveSite(folder, database) as site:
        gib = os.path.getsize(site.db) / (1 << 30)
        live = [site.backup() for _ in range(rounds)]
        site.close()
    lives = [m[3] for m in live]
    live_probes.extend(live)
    live_rss.extend(site.rss)
    phase = copy_phase(lives)
    rows.append((f"live backup, copy phase (live.copy_seconds), {gib:.2f} GiB on XFS with reflink, "
                 f"app committing ~100/s (cloned: {cloned(lives)})",
                 f"{phase * 1000:.2f} ms" if isinstance(phase, float) else phase, "", "", "<= 50 ms"))
    rows.append((f"live backup wall time, {gib:.2f} GiB on XFS with reflink, app committing ~100/s",
                 best(live), "", "", ""))
    notes.append(f"live backups on XFS: attempts {attempts(lives)}")


def window_rows(database):
    site = Site(os.path.join(work, "ext4"), database)
    gib = os.path.getsize(site.db) / (1 << 30)
    kind = fstype(work)
    base = [site.baseline() for _ in range(rounds)]
    window = [site.backup() for _ in range(rounds)]
    rows.append((f"window backup downtime, {gib:.2f} GiB on {kind}, vs stop; cp DB /tmp/x; start until healthy",
                 best(window), best(base), f"{best(window) / best(base):.2f}x", "<= 1.1x"))
    site.config(snapshot=True)
    hook = [site.backup() for _ in range(rounds)]
    rows.append(("snapshot-hook backup: failed health probes (of probes sent)",
                 f"{sum(m[1] for m in hook)} of {sum(m[2] for m in hook)}", "", "", "0"))
    site.close()


def xfs_window_rows(mount, databases):
    for database in databases:
        site = Site(os.path.join(mount, "site"), database)
        gib = os.path.getsize(site.db) / (1 << 30)
        restart = [site.restart() for _ in range(rounds)]
        window = [site.backup() for _ in range(rounds)]
        rows.append((f"window backup downtime, {gib:.2f} GiB on XFS with reflink, vs the app's restart",
                     best(window), best(restart), f"+{(best(window) - best(restart)) * 1000:.0f} ms",
                     "<= restart + 100 ms"))
        update_rows(site, "XFS with reflink")
        site.close()
        shutil.rmtree(os.path.join(mount, "site"), ignore_errors=True)


def update_rows(site, kind):
    """The update's downtime vs the same release by hand, interleaved."""
    gib = os.path.getsize(site.db) / (1 << 30)
    site.config(snapshot=False, live="auto")
    by_hand, update = [], []
    for n in range(rounds):
        by_hand.append(site.update_by_hand(2 * n))
        update.append(site.update(2 * n + 1))
    topped = f"{sum(site.topped_up[-rounds:])} of {rounds}"
    rows.append((f"update downtime, {gib:.2f} GiB on {kind}, vs stop + pull + migrate + start of the same "
                 f"release by hand (restore point topped up: {topped})", best(update), best(by_hand),
                 f"{(best(update) - best(by_hand)) * 1000:+.0f} ms", "<= +150 ms"))


def update_only(databases, kind, folder):
    for database in databases:
        site = Site(folder, database)
        update_rows(site, kind)
        site.close()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def xfs(gib):
    """A loop-mounted XFS with reflink of at least 16 GiB, for `gib` GiB of databases."""
    image = os.path.join(bench, "xfs.img")
    mount = os.path.join(bench, "xfs")
    os.makedirs(mount, exist_ok=True)
    subprocess.run(["umount", mount], capture_output=True)
    with open(image, "wb") as f:
        f.truncate(max(16, math.ceil(3 * gib)) << 30)
    subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", image], check=True)
    subprocess.run(["mount", "-o", "loop", image, mount], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", mount])
        os.remove(image)


fmt = lambda v: f"{v:.3f} s" if isinstance(v, float) else str(v)
rows, notes = [], []
live_probes, live_rss = [], []
rounds = 3
size = options.size
if options.only_update:
    databases = [database(size), database(4 * size)]
    update_only(databases, fstype(work), os.path.join(work, "ext4"))
    if os.geteuid() == 0 and shutil.which("mkfs.xfs"):
        with xfs(sum(os.path.getsize(d) for d in databases) / (1 << 30)) as mount:
            update_only(databases, "XFS with reflink", os.path.join(mount, "site"))
    print("| measure | upkeep | baseline | difference | budget |")
    print("| --- | --- | --- | --- | --- |")
    for label, ours, theirs, ratio, budget in rows:
        print(f"| {label} | {fmt(ours)} | {fmt(theirs)} | {ratio} | {budget} |")
    sys.exit(0)
if not options.only_live:
    window_rows(database(size))
live_rows(os.path.join(work, "live"), database(size))

xfs_reason = None
if os.geteuid() != 0:
    xfs_reason = "not root"
elif not shutil.which("mkfs.xfs"):
    xfs_reason = "no mkfs.xfs (Debian's xfsprogs)"
if xfs_reason is None:
    databases = [database(size)] + ([] if options.only_live else [database(4 * size)])
    with xfs(sum(os.path.getsize(d) for d in databases) / (1 << 30)) as mount:
        if not options.only_live:
            xfs_window_rows(mount, databases)
        live_xfs_rows(os.path.join(mount, "live"), databases[0])
rows.append((f"live backups{'' if xfs_reason else ' (both file systems)'}: failed health probes (of probes sent)",
             f"{sum(m[1] for m in live_probes)} of {sum(m[2] for m in live_probes)}", "", "", "0"))
rows.append(("peak memory of upkeep during the live backups (max RSS)", f"{max(live_rss):.0f} MiB", "", "",
             "<= 300 MiB"))

print(f"{rounds} rounds, best of each\n")
print("| measure | upkeep | baseline | ratio | budget |")
print("| --- | --- | --- | --- | --- |")
for label, ours, theirs, ratio, budget in rows:
    print(f"| {label} | {fmt(ours)} | {fmt(theirs)} | {ratio} | {budget} |")
print()
for note in notes:
    print(note)
if xfs_reason:
    print(f"XFS with reflink: skipped ({xfs_reason})")
top = max(peak_rss)
print(f"\npeak memory of upkeep (max RSS): {top[0]:.0f} MiB ({top[1]}); budget < 300 MiB")
