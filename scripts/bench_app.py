#!/usr/bin/env python3
"""A stand-in app for the live-copy rows of scripts/bench_live.py.

Usage: bench_app.py DB LATENCIES [RATE [CHECKPOINT_EVERY]]   (run with the
bench venv's python: the official DuckDB 2.0 build, as an app would run it)

It opens DB read-write and keeps it open, so it holds DuckDB's lock the
whole time, as a running app does. Two threads, each on its own cursor:

- GET /health on 127.0.0.1 (a free port, printed on the first line of
  stdout): 200 only when `SELECT 1` works, else 503;
- a writer that commits about RATE (default 100) transactions a second,
  each a single-row INSERT into a table of its own (`bench_app_commits`),
  each its own transaction, paced at 1/RATE apart from where the last one
  started (no catching up after a slow commit: the slow one shows as its
  own latency); with CHECKPOINT_EVERY (seconds), a `CHECKPOINT` that often,
  as a long-running app's automatic ones would.

On SIGTERM or SIGINT it stops the writer and writes one line per commit to
LATENCIES: the commit's start (time.monotonic(), the system-wide
CLOCK_MONOTONIC, so the bench can compare it with its own clock) and its
latency, both in seconds.
"""
import http.server
import signal
import sys
import threading
import time

import duckdb

db, latencies = sys.argv[1], sys.argv[2]
rate = float(sys.argv[3]) if len(sys.argv) > 3 else 100.0
checkpoint_every = float(sys.argv[4]) if len(sys.argv) > 4 else None
con = duckdb.connect(db)
con.execute("CREATE TABLE IF NOT EXISTS bench_app_commits (id BIGINT, started DOUBLE, payload VARCHAR)")
stop = threading.Event()
commits = []


def writer():
    cursor = con.cursor()
    pause = 1.0 / rate
    n = 0
    due = time.monotonic()
    checkpoint_due = due + (checkpoint_every or 0)
    while not stop.is_set():
        if checkpoint_every and time.monotonic() >= checkpoint_due:
            cursor.execute("CHECKPOINT")
            checkpoint_due += checkpoint_every
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        start = time.monotonic()
        cursor.execute("INSERT INTO bench_app_commits VALUES (?, ?, ?)", [n, start, f"commit {n:012d}"])
        commits.append((start, time.monotonic() - start))
        n += 1
        due = start + pause
    cursor.close()


class Health(http.server.BaseHTTPRequestHandler):
    # The bench's prober wants an HTTP/1.1 status line.
    protocol_version = "HTTP/1.1"
    cursor = None

    def do_GET(self):
        if self.path != "/health":
            status, body = 404, b"not found\n"
        else:
            try:
                if Health.cursor is None:
                    Health.cursor = con.cursor()
                ok = Health.cursor.execute("SELECT 1").fetchone() == (1,)
                status, body = (200, b"ok\n") if ok else (503, b"bad answer\n")
            except duckdb.Error as error:
                Health.cursor = None
                status, body = 503, f"{error}\n".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Health)
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
threads = [threading.Thread(target=writer), threading.Thread(target=server.serve_forever, daemon=True)]
for thread in threads:
    thread.start()
print(server.server_address[1], flush=True)
while not stop.is_set():
    stop.wait(0.2)
threads[0].join()
server.shutdown()
with open(latencies, "w") as out:
    out.writelines(f"{start:.6f} {latency:.6f}\n" for start, latency in commits)
con.close()
