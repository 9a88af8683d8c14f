#!/usr/bin/env python3
"""Make a DuckDB file of at least SIZE GiB for the benchmarks.

Usage: make_big_db.py PATH [SIZE_GIB]

Two tables with a primary key each, a sequence, and enough poorly
compressible text that the file reaches the size asked for. Written by the
official DuckDB build (pip package `duckdb`), as an app would write it.
"""
import os
import sys

import duckdb

path = sys.argv[1]
target = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
target_bytes = int(target * (1 << 30))
if os.path.exists(path):
    os.remove(path)
con = duckdb.connect(path)
con.execute("""
CREATE SEQUENCE events_id_seq;
CREATE TABLE users (id INTEGER PRIMARY KEY, email VARCHAR NOT NULL, created TIMESTAMP);
CREATE TABLE events (
    id BIGINT PRIMARY KEY DEFAULT nextval('events_id_seq'),
    user_id INTEGER,
    kind VARCHAR,
    payload VARCHAR,
    amount DOUBLE,
    created TIMESTAMP
);
INSERT INTO users SELECT i, 'user' || i || '@example.com', TIMESTAMP '2024-01-01' + INTERVAL (i) SECOND FROM range(100000) r(i);
""")
batch = 2_000_000
start = 0
while os.path.getsize(path) < target_bytes:
    con.execute(f"""
    INSERT INTO events (user_id, kind, payload, amount, created)
    SELECT (i * 7919) % 100000,
           ['view', 'click', 'buy', 'refund'][1 + (i % 4)],
           md5(i::VARCHAR) || md5((i * 31)::VARCHAR),
           (i % 100000) / 100.0,
           TIMESTAMP '2024-01-01' + INTERVAL (i) SECOND
    FROM range({start}, {start + batch}) r(i)
    """)
    con.execute("CHECKPOINT")
    start += batch
con.close()
print(f"{path}: {os.path.getsize(path) / (1 << 30):.2f} GiB, {start} events")
