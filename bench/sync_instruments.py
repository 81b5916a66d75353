"""Benchmark: `manage.py sync_instruments` on a realistic 130,000-row Kite dump.

Prints, for SQLite and (when DATABASE_URL is PostgreSQL) PostgreSQL: the first sync,
a re-sync with no changes, a re-sync with 5% changed and 2% vanished, and each run's
peak RSS; and PostgreSQL's own COPY of the same file into a bare table, measured in the
same run, as the baseline (ratio sync/COPY). Targets: first sync within 3x COPY, peak
RSS under 150 MB.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

from _common import BASE_DIR, bench_env, kite_rows, manage, postgres_database, sqlite_database, write_dump

ROWS = int(os.environ.get("BENCH_ROWS", "130000"))


def timed_sync(env: dict[str, str], path: Path) -> tuple[float, float, float]:
    """One sync in its own process: its own elapsed seconds (from --json), the process's
    wall seconds (with interpreter and Django start-up), and its peak RSS in MB."""
    import json
    import subprocess

    out = tempfile.TemporaryFile()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "sync_instruments", "--file", str(path), "--force", "--json"],
        cwd=BASE_DIR, env=env, stdout=out,
    )  # fmt: skip
    peak = _watch_rss(process)
    out.seek(0)
    output = out.read()
    wall = time.perf_counter() - started
    if process.wait() != 0:
        raise SystemExit(f"sync failed with exit {process.returncode}")
    return json.loads(output)["elapsed_seconds"], wall, peak


def _watch_rss(process) -> float:  # type: ignore[no-untyped-def]
    """Peak resident memory (MB) of a running process, sampled every 10 ms.

    (ru_maxrss would count the benchmark's own memory, inherited at fork.)"""
    import threading

    import psutil

    peak = 0
    watched = psutil.Process(process.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    while process.poll() is None:
        time.sleep(0.02)
    done.set()
    sampler.join()
    return peak / 1e6


def startup_rss() -> float:
    import subprocess

    process = subprocess.Popen(
        [sys.executable, "manage.py", "check", "-v", "0"], cwd=BASE_DIR, env=bench_env(sqlite_database())
    )
    _, _, usage = os.wait4(process.pid, 0)
    return usage.ru_maxrss / 1024


def changed_dump(rows: list[list[str]], folder: Path) -> Path:
    rng = random.Random(11)
    kept = [list(r) for r in rows if rng.random() >= 0.02]  # 2% vanished
    for row in rng.sample(kept, k=int(len(kept) * 0.05)):  # 5% changed
        row[8] = str(int(row[8]) + 1)
    return write_dump(kept, folder / "changed.csv")


def raw_copy_seconds(url: str, path: Path) -> float:
    import psycopg2

    connection = psycopg2.connect(url.replace("postgres://", "postgresql://", 1))
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE bare_copy (instrument_token bigint, exchange_token bigint, tradingsymbol varchar(64), "
            "name varchar(128), last_price numeric(18,4), expiry date, strike numeric(18,4), "
            "tick_size numeric(12,6), lot_size integer, instrument_type varchar(16), segment varchar(32), "
            "exchange varchar(16))"
        )
    with connection, connection.cursor() as cursor, open(path) as handle:
        started = time.perf_counter()
        cursor.copy_expert("COPY bare_copy FROM STDIN WITH (FORMAT csv, HEADER true)", handle)
        elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def run(label: str, url: str, full: Path, changed: Path) -> None:
    env = bench_env(url)
    manage(env, "migrate", "-v", "0")
    first, wall1, rss1 = timed_sync(env, full)
    same, wall2, rss2 = timed_sync(env, full)
    delta, wall3, rss3 = timed_sync(env, changed)
    print(f"[{label}] first sync      {first:6.2f} s  (process {wall1:5.2f} s)  peak RSS {rss1:6.1f} MB")
    print(f"[{label}] re-sync, same   {same:6.2f} s  (process {wall2:5.2f} s)  peak RSS {rss2:6.1f} MB")
    print(f"[{label}] re-sync, 5%/2%  {delta:6.2f} s  (process {wall3:5.2f} s)  peak RSS {rss3:6.1f} MB")
    if url.startswith("postgres"):
        copy = raw_copy_seconds(url, full)
        print(
            f"[{label}] raw COPY of the same file into a bare table: {copy:.2f} s -> first sync / COPY = "
            f"{first / copy:.1f}x (target <= 3x)"
        )
    peak = max(rss1, rss2, rss3)
    print(f"[{label}] peak RSS {peak:.1f} MB (target < 150 MB): {'ok' if peak < 150 else 'OVER'}")


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    rows = kite_rows(ROWS)
    full = write_dump(rows, folder / "full.csv")
    changed = changed_dump(rows, folder)
    print(f"dump: {len(rows)} rows, {full.stat().st_size / 1e6:.1f} MB")
    # The interpreter + Django baseline RSS, for reading the peaks above.
    print(f"baseline: a process that only starts Django peaks at {startup_rss():.1f} MB")
    run("sqlite", sqlite_database(), full, changed)
    pg = postgres_database("portal_bench_sync")
    if pg:
        run("postgres", pg, full, changed)
    else:
        print(
            "[postgres] skipped: set DATABASE_URL=postgres://... to measure PostgreSQL and the COPY baseline"
        )


if __name__ == "__main__":
    main()
