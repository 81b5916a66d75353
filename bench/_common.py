"""Shared by the benchmarks: a realistic Kite dump and throwaway databases."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

HEADER = [
    "instrument_token", "exchange_token", "tradingsymbol", "name", "last_price", "expiry", "strike",
    "tick_size", "lot_size", "instrument_type", "segment", "exchange",
]  # fmt: skip
SEGMENT_CODES = {"NSE": 1, "NFO": 2, "CDS": 3, "BSE": 4, "MCX": 7, "INDICES": 9}


def kite_rows(total: int = 130_000, seed: int = 7) -> list[list[str]]:
    """A dump shaped like Kite's: indices, NSE/BSE equities, NFO options dominate, CDS, MCX."""
    rng = random.Random(seed)
    rows: list[list[str]] = []
    serial = 1

    def token(segment: str) -> int:
        nonlocal serial
        serial += 1
        return serial * 256 + SEGMENT_CODES[segment]

    for name in ["NIFTY 50", "NIFTY BANK", *[f"NIFTY INDEX {i}" for i in range(148)]]:
        rows.append(
            [
                str(token("INDICES")),
                str(serial),
                name,
                name,
                "0.0",
                "",
                "0.0",
                "0.0",
                "0",
                "EQ",
                "INDICES",
                "NSE",
            ]
        )
    for i in range(2500):
        price = f"{rng.uniform(10, 5000):.2f}"
        rows.append(
            [
                str(token("NSE")),
                str(serial),
                f"EQ{i}",
                f"COMPANY {i} LTD",
                price,
                "",
                "0.0",
                "0.05",
                "1",
                "EQ",
                "NSE",
                "NSE",
            ]
        )
    for i in range(10000):
        rows.append(
            [
                str(token("BSE")),
                str(serial),
                f"B{i}",
                f"BSE CO {i}",
                "0.0",
                "",
                "0.0",
                "0.01",
                "1",
                "EQ",
                "BSE",
                "BSE",
            ]
        )
    expiries = [date(2099, 1, 1) + timedelta(days=7 * k) for k in range(12)]
    for i in range(3000):
        e = expiries[i % 3]
        rows.append(
            [
                str(token("CDS")),
                str(serial),
                f"USDINR{i}",
                "USDINR",
                "0.0",
                e.isoformat(),
                f"{80 + i * 0.0025:.4f}",
                "0.0025",
                "1",
                "CE" if i % 2 else "PE",
                "CDS-OPT",
                "CDS",
            ]
        )
    for i in range(4000):
        e = expiries[i % 4]
        rows.append(
            [
                str(token("MCX")),
                str(serial),
                f"CRUDE{i}",
                "CRUDEOIL",
                "6500",
                e.isoformat(),
                f"{5000 + i * 10}.0",
                "1.0",
                "100",
                "CE" if i % 2 else "PE",
                "MCX-OPT",
                "MCX",
            ]
        )
    underlyings = ["NIFTY", "BANKNIFTY", "FINNIFTY", *[f"STOCK{i}" for i in range(180)]]
    for u in underlyings:
        for e in expiries[:3]:
            rows.append(
                [
                    str(token("NFO")),
                    str(serial),
                    f"{u}{e:%y%b}FUT".upper(),
                    u,
                    "100.0",
                    e.isoformat(),
                    "0.0",
                    "0.05",
                    "50",
                    "FUT",
                    "NFO-FUT",
                    "NFO",
                ]
            )
    k = 0
    while len(rows) < total:
        u = underlyings[k % len(underlyings)]
        e = expiries[(k // len(underlyings)) % len(expiries)]
        strike = 1000 + (k // (len(underlyings) * len(expiries))) * 50
        for kind in ("CE", "PE"):
            rows.append(
                [
                    str(token("NFO")),
                    str(serial),
                    f"{u}{e:%y%b}{strike}{kind}".upper(),
                    u,
                    f"{rng.uniform(1, 500):.2f}",
                    e.isoformat(),
                    f"{strike}.0",
                    "0.05",
                    "50",
                    kind,
                    "NFO-OPT",
                    "NFO",
                ]
            )
        k += 1
    return rows[:total]


def write_dump(rows: list[list[str]], path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def bench_env(database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tradingportal.settings",
        DATABASE_URL=database_url,
        SECRET_KEY="bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        HTTPS="0",
        LOG_LEVEL="WARNING",
        SYNC_SHRINK_RATIO="0",
    )
    env.pop("REDIS_URL", None)
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )


def sqlite_database() -> str:
    folder = Path(tempfile.mkdtemp(prefix="bench-"))
    return f"sqlite:///{folder / 'bench.sqlite3'}"


def postgres_database(name: str) -> str | None:
    """A fresh database next to DATABASE_URL's, or None when DATABASE_URL is not PostgreSQL."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return None
    import psycopg2

    parts = urlsplit(url)
    admin = psycopg2.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username,
                             password=parts.password, dbname="postgres")  # fmt: skip
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
