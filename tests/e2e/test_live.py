"""Live data end to end: real processes (uvicorn, run_ingestion, the simulator) and a
websocket client that logs in like a browser."""

import asyncio
import json
import os
import signal
import time
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import requires_redis
from tests.helpers import (
    BASE_DIR,
    free_port,
    login_cookie,
    port_open,
    portal_env,
    running,
    uvicorn_argv,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
REQUIRED = {"instrument_token", "tradingsymbol", "exchange", "last_price", "change", "change_percent"}


def ticks_until(port: int, cookie: str, predicate, *, subscribe=None, timeout: float = 20.0) -> dict:
    """Collect ticks from /ws/ticks/ (latest per token) until ``predicate(latest)`` holds."""

    async def run():
        latest: dict = {}
        async with connect(f"ws://127.0.0.1:{port}/ws/ticks/", additional_headers={"Cookie": cookie},
                           origin=f"http://127.0.0.1:{port}", open_timeout=10) as ws:  # fmt: skip
            acknowledged = subscribe is None
            if subscribe is not None:
                await ws.send(json.dumps({"action": "subscribe", **subscribe}))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout=deadline - time.monotonic()))
                if message["type"] == "subscribed":
                    acknowledged = True
                if message["type"] == "ticks" and acknowledged:
                    for tick in message["ticks"]:
                        latest[tick["instrument_token"]] = tick
                    if predicate(latest):
                        return latest
        raise AssertionError(f"condition not met; got ticks for {sorted(latest)}")

    return asyncio.run(run())


def refused(port: int, **headers) -> int:
    async def run():
        try:
            async with connect(f"ws://127.0.0.1:{port}/ws/ticks/", open_timeout=10, **headers):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(run())


def test_embedded_arrangement_web_runs_the_feed(desk, tmp_path):
    """No REDIS_URL: the in-memory channel layer, so the feed runs inside the web process."""
    _, nifty, reliance, idle = desk
    port = free_port()
    env = portal_env(redis=False, INGESTION_IN_PROCESS="1", INGESTION_SIMULATE="1")
    with running(uvicorn_argv(port), env, tmp_path / "web.log"):
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        cookie = login_cookie(port, "desk", "desk-pass-123")

        # Authenticated users only, and only from our own origin.
        assert refused(port, origin=f"http://127.0.0.1:{port}") == 403
        assert refused(port, origin="http://evil.example", additional_headers={"Cookie": cookie}) == 403

        latest = ticks_until(
            port, cookie, lambda t: {nifty.instrument_token, reliance.instrument_token} <= set(t)
        )
        assert idle.instrument_token not in latest
        tick = latest[reliance.instrument_token]
        assert set(tick) >= REQUIRED
        assert tick["tradingsymbol"] == "RELIANCE" and tick["exchange"] == "NSE"
        assert {"volume", "oi", "bid", "bid_quantity", "ask", "ask_quantity", "exchange_timestamp"} <= set(
            tick
        )
        assert isinstance(tick["last_price"], str)

        # Narrowed to one token, only that token arrives.
        narrowed = ticks_until(
            port, cookie, lambda t: len(t) >= 1, subscribe={"tokens": [nifty.instrument_token]}
        )
        assert set(narrowed) == {nifty.instrument_token}

        body = latest_api(port, cookie, "738561,1")
        assert body["ticks"]["738561"]["tradingsymbol"] == "RELIANCE" and body["ticks"]["1"] is None
        assert body["ticks"]["738561"]["received_at"].endswith("+05:30")
        assert latest_api(port, cookie, "738561", max_age=60)["ticks"]["738561"] is not None
        staff = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Cookie": cookie})
        health = json.load(urllib.request.urlopen(staff, timeout=10))  # details: staff only
        assert health["ingestion"]["running"] and health["ingestion"]["feed"] == "simulator"

        # An operator deactivates RELIANCE: open dashboards are told to drop its row, and
        # its last price is no longer served as if it were live.
        removed = removed_after(port, cookie, lambda: _deactivate(reliance))
        assert removed == [reliance.instrument_token]
        assert latest_api(port, cookie, "738561")["ticks"]["738561"] is None


def _deactivate(instrument):
    type(instrument).objects.filter(pk=instrument.pk).update(is_active=False)


def latest_api(port: int, cookie: str, tokens: str, **params) -> dict:
    query = "&".join([f"tokens={tokens}", *(f"{k}={v}" for k, v in params.items())])
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/ticks/latest/?{query}", headers={"Cookie": cookie}
    )
    return json.load(urllib.request.urlopen(request, timeout=10))


def removed_after(port: int, cookie: str, action, timeout: float = 20.0) -> list[int]:
    """Open a dashboard socket, wait for ticks, run ``action``; the tokens of the first
    ``removed`` frame that follows."""

    async def run():
        async with connect(f"ws://127.0.0.1:{port}/ws/ticks/", additional_headers={"Cookie": cookie},
                           origin=f"http://127.0.0.1:{port}", open_timeout=10) as ws:  # fmt: skip
            while json.loads(await asyncio.wait_for(ws.recv(), timeout))["type"] != "ticks":
                pass
            await asyncio.to_thread(action)
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                if message["type"] == "removed":
                    return message["tokens"]

    return asyncio.run(run())


@requires_redis
def test_redis_arrangement_separate_ingestion_and_two_web_workers(desk, tmp_path):
    """REDIS_URL: simulator, run_ingestion and uvicorn (2 workers) as separate processes."""
    user, nifty, reliance, idle = desk
    sim_port, web_port = free_port(), free_port()
    env = portal_env(redis=True)
    simulator = [*manage_argv("run_simulator", "--port", str(sim_port), "--api-key", "e2e-key",
                              "--access-token", "e2e-token", "--interval", "0.2")]  # fmt: skip
    feed_env = {**env, "KITE_TICKER_URL": f"ws://127.0.0.1:{sim_port}", "KITE_API_KEY": "e2e-key",
                "KITE_ACCESS_TOKEN": "e2e-token"}  # fmt: skip
    with (
        running(simulator, env, tmp_path / "simulator.log"),
        running(manage_argv("run_ingestion"), feed_env, tmp_path / "ingestion.log"),
        running(uvicorn_argv(web_port, workers=2), env, tmp_path / "web.log"),
    ):
        wait_for(lambda: port_open(web_port) and port_open(sim_port), timeout=30, what="processes")
        cookie = login_cookie(web_port, "desk", "desk-pass-123")
        latest = ticks_until(
            web_port, cookie, lambda t: {nifty.instrument_token, reliance.instrument_token} <= set(t)
        )
        assert set(latest[nifty.instrument_token]) >= REQUIRED

        # An operator switches SBIN on through the API: it streams within seconds, no restart.
        from django.contrib.auth.models import Permission
        from rest_framework.authtoken.models import Token

        user.user_permissions.add(Permission.objects.get(codename="change_instrument"))
        token = Token.objects.create(user=user)
        request = urllib.request.Request(
            f"http://127.0.0.1:{web_port}/api/instruments/activate/", method="POST",
            data=json.dumps({"tokens": [idle.instrument_token]}).encode(),
            headers={"Authorization": f"Token {token.key}", "Content-Type": "application/json"},
        )  # fmt: skip
        assert json.load(urllib.request.urlopen(request, timeout=10))["changed"] == 1
        ticks_until(web_port, cookie, lambda t: idle.instrument_token in t, timeout=30)
    assert "Traceback" not in (tmp_path / "ingestion.log").read_text()


@requires_redis
def test_a_quiet_channel_layer_does_not_cut_dashboards(desk, tmp_path):
    """The ingestion stops (SIGSTOP: nothing reaches the channel layer) for longer than
    channels-redis' 5 s blocking read: the dashboard's socket stays open, and ticks come
    back on it when the ingestion continues."""
    _, nifty, reliance, _ = desk
    sim_port, web_port = free_port(), free_port()
    env = portal_env(redis=True)
    simulator = manage_argv("run_simulator", "--port", str(sim_port), "--interval", "0.2")
    feed_env = {**env, "KITE_TICKER_URL": f"ws://127.0.0.1:{sim_port}", "KITE_API_KEY": "e2e-key",
                "KITE_ACCESS_TOKEN": "e2e-token"}  # fmt: skip
    with (
        running(simulator, env, tmp_path / "simulator.log"),
        running(manage_argv("run_ingestion"), feed_env, tmp_path / "ingestion.log") as ingestion,
        running(uvicorn_argv(web_port), env, tmp_path / "web.log"),
    ):
        wait_for(lambda: port_open(web_port) and port_open(sim_port), timeout=30, what="processes")
        cookie = login_cookie(web_port, "desk", "desk-pass-123")

        async def run():
            async with connect(f"ws://127.0.0.1:{web_port}/ws/ticks/", additional_headers={"Cookie": cookie},
                               origin=f"http://127.0.0.1:{web_port}", open_timeout=10) as ws:  # fmt: skip
                while json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] != "ticks":
                    pass
                os.kill(ingestion.pid, signal.SIGSTOP)
                try:
                    quiet_until = time.monotonic() + 15
                    while (left := quiet_until - time.monotonic()) > 0:
                        try:  # what was already in flight, then nothing; never a close
                            await asyncio.wait_for(ws.recv(), left)
                        except TimeoutError:
                            break
                    await asyncio.wait_for(await ws.ping(), 10)  # open, and the server answers
                finally:
                    os.kill(ingestion.pid, signal.SIGCONT)
                tokens: set[int] = set()
                while not {nifty.instrument_token, reliance.instrument_token} <= tokens:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if message["type"] == "ticks":
                        tokens |= {tick["instrument_token"] for tick in message["ticks"]}

        asyncio.run(run())
    log = (tmp_path / "web.log").read_text()
    assert "TimeoutError" not in log and "Traceback" not in log, log


def manage_argv(*args: str) -> list[str]:
    import sys

    return [sys.executable, str(BASE_DIR / "manage.py"), *args]


def test_rows_keep_ticking_while_an_active_set_change_holds_the_database(desk, tmp_path):
    """The embedded arrangement: an operator's change that holds SQLite's write lock for a
    while (an admin action, a sync in one transaction) makes the feed's database work wait
    (the risk monitor's writes). The dashboards' sockets must not wait with it: the
    instruments that stay active keep ticking while the lock is held, and the deactivated
    one is removed once it commits."""
    import sqlite3
    import threading

    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("holds SQLite's database-wide write lock")
    _, nifty, reliance, idle = desk
    type(idle).objects.filter(pk=idle.pk).update(is_active=True)
    untouched = {nifty.instrument_token, reliance.instrument_token}
    port = free_port()
    locked, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        db = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
        try:
            db.execute("BEGIN EXCLUSIVE")
            db.execute(
                "UPDATE instruments SET is_active = 0 WHERE instrument_token = ?", (idle.instrument_token,)
            )
            locked.set()
            release.wait(60)
            db.execute("COMMIT")
        finally:
            db.close()

    env = portal_env(redis=False, INGESTION_IN_PROCESS="1", INGESTION_SIMULATE="1")
    with running(uvicorn_argv(port), env, tmp_path / "web.log"):
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        cookie = login_cookie(port, "desk", "desk-pass-123")

        async def run() -> list[int]:
            async with connect(f"ws://127.0.0.1:{port}/ws/ticks/", additional_headers={"Cookie": cookie},
                               origin=f"http://127.0.0.1:{port}", open_timeout=10) as ws:  # fmt: skip

                async def ticks_of_each(count: int) -> None:
                    seen = dict.fromkeys(untouched, 0)
                    while min(seen.values()) < count:
                        message = json.loads(await ws.recv())
                        for tick in message["ticks"] if message["type"] == "ticks" else []:
                            if tick["instrument_token"] in seen:
                                seen[tick["instrument_token"]] += 1

                await asyncio.wait_for(ticks_of_each(1), 30)  # streaming
                holder = threading.Thread(target=hold_the_write_lock)
                holder.start()
                try:
                    assert await asyncio.to_thread(locked.wait, 10), "could not take the write lock"
                    # Eight ticks of each while the lock is held (the simulator ticks each
                    # once a second; the feed's database work waits from its next risk check,
                    # within OMS_RISK_MONITOR_SECONDS). Well within SQLite's 30 s busy
                    # timeout, after which the waiting write would fail and free the thread.
                    await asyncio.wait_for(ticks_of_each(8), 20)
                    assert holder.is_alive()  # still held: the ticks came through it
                finally:
                    release.set()
                    await asyncio.to_thread(holder.join, 60)

                async def first_removed() -> list[int]:
                    while True:
                        message = json.loads(await ws.recv())
                        if message["type"] == "removed":
                            return message["tokens"]

                return await asyncio.wait_for(first_removed(), 30)

        assert asyncio.run(run()) == [idle.instrument_token]
