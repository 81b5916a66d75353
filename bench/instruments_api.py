"""Benchmark: instrument search through the API and the token lookup selector, on 130,000 rows.

Prints p50/p99 of `GET /api/instruments/?search=` for symbol prefixes and name fragments
(target p99 under 10 ms on PostgreSQL) and of the token lookup selector: from the
in-process layer, from the shared cache (Redis when REDIS_URL is set; target under
1 ms), and cold from the database. The baseline, measured in the same run, is a bare
`SELECT 1` round trip on the same connection; every figure is also given as a ratio to it.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import BASE_DIR, bench_env, kite_rows, postgres_database, sqlite_database, write_dump

ROWS = int(os.environ.get("BENCH_ROWS", "130000"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "200"))


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def timed(fn, repeat: int = REPEAT) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def main() -> None:
    database = postgres_database("portal_bench_api") or sqlite_database()
    redis_url = os.environ.get("REDIS_URL", "")
    env = bench_env(database)
    if redis_url:
        env["REDIS_URL"] = redis_url
        env["CACHE_KEY_PREFIX"] = "bench"
    env["ALLOWED_HOSTS"] = "testserver"
    os.environ.update(env)
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from instruments import selectors
    from instruments.models import Instrument
    from instruments.services import instrument_sync

    call_command("migrate", verbosity=0)
    folder = Path(tempfile.mkdtemp(prefix="bench-api-"))
    dump = write_dump(kite_rows(ROWS), folder / "full.csv")
    instrument_sync(source="kite", path=str(dump), force=True)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("VACUUM ANALYZE instruments")
    user = get_user_model().objects.create_user("bench", password="bench-password-1")
    client = Client()
    client.force_login(user)
    cache.clear()

    def select_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    base50, base99 = timed(select_one)
    print(
        f"database: {connection.vendor}, cache: {'redis' if redis_url else 'local memory'}, rows: {Instrument.objects.count()}"
    )
    print(f"baseline SELECT 1: p50 {base50:.3f} ms  p99 {base99:.3f} ms")

    rng = random.Random(3)
    token = Instrument.objects.filter(is_listed=True).values_list("instrument_token", flat=True).first()
    fixed50, fixed99 = timed(lambda: client.get(f"/api/instruments/{token}/"))
    print(
        f"GET /api/instruments/<token>/ (the request's fixed cost): p50 {fixed50:.2f} ms  p99 {fixed99:.2f} ms"
    )
    prefixes = ["NIFTY", "BANKN", "STOCK42", "EQ12", "USDINR1", "CRUDE2", "B99", "FINNIFTY99"]
    fragments = ["COMPANY 12", "BSE CO 9", "OIL", "INDEX 1", "LTD"]
    for label, terms in (("symbol prefix", prefixes), ("name fragment", fragments)):

        def search(terms: list[str] = terms) -> None:
            response = client.get("/api/instruments/", {"search": rng.choice(terms)})
            assert response.status_code == 200

        p50, p99 = timed(search)
        target = " (target p99 < 10 ms)" if connection.vendor == "postgresql" else ""
        print(f"GET /api/instruments/?search= {label:14}: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
              f"= {p99 / base99:5.1f}x baseline p99{target}")  # fmt: skip

    tokens = list(Instrument.objects.values_list("instrument_token", flat=True)[:5000])
    selectors.instruments_meta(tokens[:1000])  # warm the shared cache for these
    selectors._local.clear()
    original_ttl = selectors.LOCAL_TTL

    selectors.LOCAL_TTL = 0.0
    p50, p99 = timed(lambda: selectors.instrument_meta(rng.choice(tokens[:1000])), repeat=2000)
    print(
        f"lookup, shared cache   : p50 {p50:.3f} ms  p99 {p99:.3f} ms  = {p99 / base99:.2f}x baseline (target < 1 ms)"
    )
    cold = iter(tokens[1000:])

    def cold_lookup() -> None:
        selectors.instrument_meta(next(cold))

    p50, p99 = timed(cold_lookup, repeat=2000)
    print(f"lookup, cold (database): p50 {p50:.3f} ms  p99 {p99:.3f} ms  = {p99 / base99:.2f}x baseline")
    selectors.LOCAL_TTL = original_ttl
    selectors.instruments_meta(tokens[:1000])
    p50, p99 = timed(lambda: selectors.instrument_meta(rng.choice(tokens[:1000])), repeat=20000)
    print(
        f"lookup, in process     : p50 {p50 * 1000:.1f} us  p99 {p99 * 1000:.1f} us  = {p99 / base99:.3f}x baseline"
    )


if __name__ == "__main__":
    main()
