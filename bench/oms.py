"""Benchmark: orders through the OMS on the paper broker.

1. In process: orders per second through ``order_place`` (idempotency, the pre-trade
   risk validator, the paper broker and persistence with the audit trail), for resting
   LIMIT orders and for MARKET orders that fill (trade, position, daily statistics), against
   a baseline measured in the same run: bare inserts of the same order rows. Also the
   queries and this process's CPU time per order (steadier than the wall clock on a shared
   machine). The strategy's resting book grows to ``BENCH_ORDERS`` orders, which every
   placement's risk check counts.
2. Over HTTP: p50/p99 of ``POST /api/orders/`` (a paper LIMIT order) on a real uvicorn,
   with one client (a request's own latency) and under a bounded local load
   (``BENCH_CLIENTS`` concurrent clients, default 4; target p99 under 50 ms on these
   machines), against a baseline through the same stack: ``GET /api/orders/`` with a
   status filter no order matches (authentication, throttle, a database connection).

Kite's 10 orders/s limit and the API throttle are lifted for the run (they would measure
the limits, not the OMS). ``BENCH_DB_NAME`` names the PostgreSQL database it creates
(default ``portal_bench_oms``; dropped and created anew) when ``DATABASE_URL`` is PostgreSQL.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

from _common import BASE_DIR, bench_env, postgres_database, sqlite_database

ORDERS = int(os.environ.get("BENCH_ORDERS", "1000"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "600"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "4"))
EMPTY_LIST = "/api/orders/?status=AMO%20REQ%20RECEIVED"  # a valid filter no bench order matches


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def in_process(redis_url: str) -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from ingestion.latest import latest_store
    from instruments.models import Instrument
    from oms.models import Order, Strategy
    from oms.risk import OrderRequest
    from oms.services import order_place

    call_command("migrate", verbosity=0)
    now = timezone.now()
    instrument = Instrument.objects.create(
        source="kite", instrument_token=738561, tradingsymbol="RELIANCE", name="RELIANCE", exchange="NSE",
        segment="NSE", instrument_type="EQ", tick_size=Decimal("0.05"), lot_size=1, is_active=True,
        first_seen_at=now, last_seen_at=now, updated_at=now,
    )  # fmt: skip
    user = get_user_model().objects.create_superuser("bench", password="bench-password-1")
    strategy = Strategy.objects.get(name="manual")
    print(f"database: {connection.vendor}, cache: {'redis' if redis_url else 'local memory'}")

    def baseline() -> float:
        started = time.perf_counter()
        for i in range(ORDERS):
            with transaction.atomic():
                Order.objects.create(
                    strategy=strategy, placed_by=user, instrument=instrument, exchange="NSE", tradingsymbol="RELIANCE",
                    instrument_token=738561, transaction_type="BUY", quantity=1, product="MIS", order_type="LIMIT",
                    price=Decimal("2400.00"), idempotency_key=f"bare-{i}", pending_quantity=1, placed_at=now,
                    updated_at=now,
                )  # fmt: skip
        return ORDERS / (time.perf_counter() - started)

    def live_price() -> None:
        latest_store({738561: json.dumps({"instrument_token": 738561, "last_price": "2450.00", "mode": "full",
                                          "bid": "2449.95", "ask": "2450.05"})})  # fmt: skip

    def through_oms(kind: str) -> tuple[float, float, int]:
        """Orders/s (wall clock), this process's CPU ms per order (steadier than the wall
        clock on a shared machine: the database's own time is not in it), queries per order."""
        live_price()
        request = OrderRequest(transaction_type="BUY", quantity=1, product="MIS", order_type=kind,
                               price=Decimal("2400.00") if kind == "LIMIT" else Decimal(0))  # fmt: skip
        with CaptureQueriesContext(connection) as one:
            order_place(
                request=request, user=user, idempotency_key=f"{kind}-counted", instrument_token=738561
            )
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(ORDERS):
            if i % 100 == 99:
                live_price()  # a feed keeps the price fresh (MARKET orders need one under 10 s old)
            result = order_place(
                request=request, user=user, idempotency_key=f"{kind}-{i}", instrument_token=738561
            )
            assert result.refusal is None, result.refusal
        cpu_ms = (time.process_time() - cpu) / ORDERS * 1000
        return ORDERS / (time.perf_counter() - started), cpu_ms, len(one.captured_queries)

    bare = baseline()
    print(f"baseline: bare inserts of the same order rows: {bare:8.0f} rows/s")
    for kind, what in (("LIMIT", "resting LIMIT orders"), ("MARKET", "MARKET orders that fill")):
        rate, cpu_ms, queries = through_oms(kind)
        print(f"order_place, {what:23}: {rate:8.0f} orders/s = {rate / bare:.2f}x the baseline "
              f"({queries} queries, {cpu_ms:.2f} ms CPU per order)")  # fmt: skip


def over_http(env: dict[str, str]) -> None:
    port = free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / "bench-oms-uvicorn.log", "wb")  # noqa: SIM115
    argv = [sys.executable, "-m", "uvicorn", "tradingportal.asgi:application", "--host", "127.0.0.1", "--port",
            str(port), "--no-access-log"]  # fmt: skip
    server = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        token = Token.objects.get_or_create(user=get_user_model().objects.get(username="bench"))[0].key
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        body = json.dumps({"exchange": "NSE", "tradingsymbol": "RELIANCE", "transaction_type": "BUY", "quantity": 1,
                           "product": "MIS", "order_type": "LIMIT", "price": "2400.00"})  # fmt: skip

        def load(method: str, path: str, payload: str | None, clients: int) -> list[float]:
            samples: list[float] = []
            lock = threading.Lock()
            counter = iter(range(REQUESTS))

            def client() -> None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                for n in counter:
                    extra = {"Idempotency-Key": f"http-{method}-{n}-{time.time_ns()}"} if payload else {}
                    started = time.perf_counter()
                    connection.request(method, path, body=payload, headers={**headers, **extra})
                    response = connection.getresponse()
                    response.read()
                    elapsed = time.perf_counter() - started
                    assert response.status in (200, 201), response.status
                    with lock:
                        samples.append(elapsed)
                connection.close()

            threads = [threading.Thread(target=client) for _ in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return samples

        load("GET", EMPTY_LIST, None, CLIENTS)  # warm up
        # One client: the latency of a request alone; CLIENTS: under a bounded load, where a
        # request also waits for the ones ahead of it (sync views run one at a time per process).
        for clients in sorted({1, CLIENTS}):
            base50, base99 = percentiles(load("GET", EMPTY_LIST, None, clients))
            p50, p99 = percentiles(load("POST", "/api/orders/", body, clients))
            print(f"{clients} client(s): baseline GET /api/orders/ (empty page) p50 {base50:6.2f} ms  p99 {base99:6.2f} ms;"
                  f" POST /api/orders/ paper LIMIT p50 {p50:6.2f} ms  p99 {p99:6.2f} ms = {p99 / base99:.1f}x the baseline"
                  " p99 (target p99 < 50 ms)")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()


def main() -> None:
    database = postgres_database(os.environ.get("BENCH_DB_NAME", "portal_bench_oms")) or sqlite_database()
    redis_url = os.environ.get("REDIS_URL", "")
    env = bench_env(database)
    env.update(OMS_ORDERS_PER_SECOND="1000000", API_THROTTLE_USER="1000000/min", OMS_MAX_OPEN_POSITIONS="1000000",
               OMS_MAX_POSITION_QUANTITY="100000000", OMS_MAX_ORDER_VALUE="1000000000000")  # fmt: skip
    if redis_url:
        env.update(REDIS_URL=redis_url, CACHE_KEY_PREFIX="benchoms", CHANNEL_LAYER_PREFIX="benchoms")
    os.environ.update(env)
    sys.path.insert(0, str(BASE_DIR))
    in_process(redis_url)
    over_http(env)


if __name__ == "__main__":
    main()
