"""Benchmark: live data with 9000 instruments in full mode, each ticking once a second.

Prints, each against a baseline from the same run:
- parse rate of ``protocol.parse_frame`` (packets/s) against a plain ``struct`` unpack of
  the same bytes (the ceiling);
- end-to-end latency p50/p99 from the simulator's send to a logged-in websocket
  client's receive (the simulator stamps its send time into ``oi_day_low``), against the
  publish interval (target p99 < 250 ms);
- CPU % of the ingestion process (target < 50% of one core) and messages/s on the
  channel layer, against the ticks/s they carry.

With REDIS_URL set: simulator, run_ingestion and uvicorn are separate processes on
channels-redis. Without it: the embedded arrangement (the feed inside uvicorn), so the
CPU figure includes the web process.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from _common import BASE_DIR, bench_env, kite_rows, manage, postgres_database, sqlite_database, write_dump

sys.path.insert(0, str(BASE_DIR))
INSTRUMENTS = int(os.environ.get("BENCH_INSTRUMENTS", "9000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "20"))


def parse_rate() -> None:
    from ingestion.feed.protocol import build_frame, build_packet, parse_frame

    packets = [
        build_packet(
            "full",
            (i << 8) | 2,
            last=Decimal("100.05") + i,
            close=Decimal("99"),
            volume=i,
            depth=[(25, Decimal("100"), 2)] * 10,
            exchange_timestamp=1_700_000_000,
        )  # fmt: skip
        for i in range(1, 501)
    ]
    frame = build_frame(packets)
    plain = struct.Struct(">IiIiIIIiiiiIIIII" + "IiH2x" * 10)
    rounds = 40

    started = time.perf_counter()
    for _ in range(rounds):
        offset, count = 2, struct.unpack_from(">H", frame)[0]
        for _ in range(count):
            length = struct.unpack_from(">H", frame, offset)[0]
            plain.unpack_from(frame, offset + 2)
            offset += 2 + length
    ceiling = rounds * len(packets) / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(rounds):
        parse_frame(frame)
    full_depth = rounds * len(packets) / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(rounds):
        parse_frame(frame, depth_levels=1)
    rate = rounds * len(packets) / (time.perf_counter() - started)
    print(
        f"parse: {rate:,.0f} full packets/s (best bid/ask, as the ingestion decodes them), "
        f"{full_depth:,.0f}/s with 5+5 depth; plain struct ceiling {ceiling:,.0f}/s; ratio {rate / ceiling:.2f}"
    )
    print(f"parse: 9000 packets/s use {9000 / rate:.1%} of a core")  # fmt: skip


def prepare_database(env: dict[str, str]) -> None:
    manage(env, "migrate", "-v", "0")
    folder = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    dump = write_dump(kite_rows(40_000), folder / "dump.csv")
    manage(env, "sync_instruments", "--file", str(dump), "--force", "-v", "0")
    script = (
        "from instruments.models import Instrument; from django.contrib.auth import get_user_model;"
        f"ids = list(Instrument.objects.filter(exchange='NFO').order_by('id').values_list('id', flat=True)[:{INSTRUMENTS}]);"
        "Instrument.objects.filter(id__in=ids).update(is_active=True, stream_mode='full');"
        "get_user_model().objects.create_user('bench', password='bench-password-123', is_staff=True)"
    )
    manage(env, "shell", "-c", script)


async def collect(port: int, cookie: str, seconds: float) -> list[float]:
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    async with connect(f"ws://127.0.0.1:{port}/ws/ticks/", additional_headers={"Cookie": cookie},
                       origin=f"http://127.0.0.1:{port}", max_size=2**24) as ws:  # fmt: skip
        warm = time.monotonic() + 2  # the snapshot sent on connect is older by design
        deadline = warm + seconds
        while time.monotonic() < deadline:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
            if message["type"] != "ticks":
                continue
            now = int(time.time() * 1000) & 0xFFFFFFFF
            if time.monotonic() < warm:
                continue
            for tick in message["ticks"]:
                sent = tick.get("oi_day_low")
                if sent is not None:
                    latencies.append(((now - sent) & 0xFFFFFFFF) / 1000)
    return latencies


def end_to_end() -> None:
    import psutil

    from tests.helpers import free_port, login_cookie, port_open, uvicorn_argv, wait_for

    database = postgres_database("portal_bench_ingest") or sqlite_database()
    env = bench_env(database)
    redis_url = os.environ.get("REDIS_URL", "")
    if redis_url:
        env.update(REDIS_URL=redis_url, CACHE_KEY_PREFIX="bench", CHANNEL_LAYER_PREFIX="bench")
    env["LOG_LEVEL"] = "ERROR"
    prepare_database(env)
    sim_port, web_port = free_port(), free_port()
    feed = {
        **env,
        "KITE_TICKER_URL": f"ws://127.0.0.1:{sim_port}",
        "KITE_API_KEY": "bench",
        "KITE_ACCESS_TOKEN": "bench",
    }
    processes = [subprocess.Popen([sys.executable, "manage.py", "run_simulator", "--port", str(sim_port),
                                   "--stamp-send-time"], cwd=BASE_DIR, env=env)]  # fmt: skip
    if redis_url:
        ingestion = subprocess.Popen([sys.executable, "manage.py", "run_ingestion"], cwd=BASE_DIR, env=feed)
        web = subprocess.Popen(uvicorn_argv(web_port), cwd=BASE_DIR, env=env)
        processes += [ingestion, web]
        arrangement = "separate processes on channels-redis"
    else:
        # The embedded arrangement reaches the simulator through the same client code path.
        web = subprocess.Popen(
            uvicorn_argv(web_port), cwd=BASE_DIR, env={**feed, "INGESTION_IN_PROCESS": "1"}
        )
        ingestion = web
        processes.append(web)
        arrangement = "embedded (feed inside uvicorn, in-memory channel layer)"
    try:
        wait_for(lambda: port_open(web_port) and port_open(sim_port), timeout=60, what="processes")
        cookie = login_cookie(web_port, "bench", "bench-password-123")
        wait_for(lambda: _status(web_port, cookie).get("subscribed") == INSTRUMENTS, timeout=120,
                 what=f"{INSTRUMENTS} instruments subscribed")  # fmt: skip
        watched = psutil.Process(ingestion.pid)
        others = {"simulator": psutil.Process(processes[0].pid), "web": psutil.Process(web.pid)}
        for process in others.values():
            process.cpu_percent()
        me = psutil.Process()
        me.cpu_percent()
        if os.environ.get("BENCH_PROFILE"):
            subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-d", "15", "-f", "raw",
                              "-o", os.environ["BENCH_PROFILE"], "-p", str(ingestion.pid)])  # fmt: skip
        watched.cpu_percent()
        before = _status(web_port, cookie)
        started = time.monotonic()
        latencies = asyncio.run(collect(web_port, cookie, SECONDS))
        elapsed = time.monotonic() - started
        cpu = watched.cpu_percent()
        other_cpu = {name: process.cpu_percent() for name, process in others.items()}
        other_cpu["this client"] = me.cpu_percent()
        after = _status(web_port, cookie)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
    ticks = (after["ticks_total"] - before["ticks_total"]) / elapsed
    messages = (after["messages_published"] - before["messages_published"]) / elapsed
    interval_ms = float(env.get("INGESTION_PUBLISH_INTERVAL", "0.1")) * 1000
    print(f"arrangement: {arrangement}; {after['subscribed']} instruments subscribed in full mode")
    print(f"latency send->browser: p50 {p50:.0f} ms, p99 {p99:.0f} ms over {len(latencies)} ticks "
          f"(= {p99 / interval_ms:.1f}x the {interval_ms:.0f} ms publish interval; target p99 < 250 ms)")  # fmt: skip
    print(f"ingestion CPU: {cpu:.0f}% of one core (target < 50%) for {ticks:,.0f} ticks/s in")
    print("other CPU on the same cores: " + ", ".join(f"{k} {v:.0f}%" for k, v in other_cpu.items()))
    print(
        f"channel layer: {messages:.1f} messages/s carrying {ticks:,.0f} ticks/s ({ticks / max(messages, 1e-9):.0f} ticks/message)"
    )


def _status(port: int, cookie: str) -> dict:
    """The feed's heartbeat from /healthz (its details need a logged-in staff user)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Cookie": cookie})
    try:
        response = urllib.request.urlopen(request, timeout=10)  # noqa: S310 - our own http URL
    except urllib.error.HTTPError as exc:  # 503 while a dependency is down: the body still says why
        response = exc
    with response:
        return json.load(response).get("ingestion") or {}


if __name__ == "__main__":
    parse_rate()
    end_to_end()
