"""Kite's morning token rollover with real processes, never restarted: the portal streams and
trades with yesterday's session; at "06:00" the ticker (a Kite-protocol server run by the test)
and the fake Kite REST server refuse that token; the feed says "Kite login needed", a LIVE order
is REJECTED without Kite hearing the dead token again; a desk member logs in to Kite from the
portal (the round trip through the fake login page and Kite's session endpoint) and the same
processes stream and trade again within seconds with the token Kite handed out.

On PostgreSQL the feed learns of the new session by NOTIFY; on SQLite by its short poll.
With ``REDIS_URL``: ``manage.py run_ingestion`` and uvicorn as separate processes; without:
the embedded arrangement (the web process runs the feed)."""

import asyncio
import contextlib
import http.client
import json
import os
import sys
import threading
import time
import urllib.request
from datetime import datetime
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from cryptography.fernet import Fernet

from ingestion.feed.simulator import KiteSimulator
from kitesession.store import access_token, session_save, session_state
from tests.e2e.test_live import ticks_until
from tests.fakes.kite_login import FakeKiteLogin
from tests.fakes.kite_rest import FakeKite
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
API_KEY, API_SECRET = "e2e-kite-key", "e2e-kite-secret"
YESTERDAY = "yesterday-token-0123456789"


class TickerThread:
    """The simulator on its own event loop in a thread of the test: the test rolls it over."""

    def __init__(self, **options) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kite-ticker", daemon=True)
        self.simulator = KiteSimulator(**options)

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def __enter__(self) -> "TickerThread":
        self.thread.start()
        self.call(self.simulator.start())
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            self.call(self.simulator.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def health(port: int, cookie: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Cookie": cookie})
    try:
        return json.load(urllib.request.urlopen(request, timeout=10))
    except urllib.error.HTTPError as exc:  # 503 while the feed is down: the body says why
        return json.load(exc)


def order(port: int, api_token: str, key: str) -> dict:
    body = {"exchange": "NSE", "tradingsymbol": "RELIANCE", "transaction_type": "BUY", "quantity": 1,
            "product": "MIS", "order_type": "MARKET", "strategy": "live-desk"}  # fmt: skip
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/orders/", method="POST", data=json.dumps(body).encode(),
        headers={"Authorization": f"Token {api_token}", "Content-Type": "application/json", "Idempotency-Key": key},
    )  # fmt: skip
    return json.load(urllib.request.urlopen(request, timeout=30))


def stamped_after(moment: float, tokens: set[int]):
    """A predicate on collected ticks: every one of ``tokens`` ticked after ``moment``."""

    def fresh(latest: dict) -> bool:
        return all(
            token in latest
            and latest[token].get("exchange_timestamp")
            and datetime.fromisoformat(latest[token]["exchange_timestamp"]).timestamp() > int(moment)
            for token in tokens
        )

    return fresh


def get(url: str, cookie: str = "") -> tuple[int, str, str]:
    """One GET, redirects not followed: (status, Location, body)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}", headers={"Cookie": cookie} if cookie else {})
        response = connection.getresponse()
        return response.status, response.getheader("Location") or "", response.read().decode()
    finally:
        connection.close()


def log_in_to_kite(port: int, cookie: str) -> str:
    """Log in to Kite as a desk member does: Log in to Kite -> Kite's login page -> the callback."""
    status, to_kite, _ = get(f"http://127.0.0.1:{port}/kite/login/", cookie)
    assert status == 302, status
    status, back, _ = get(to_kite)  # Kite's page: the desk member logs in there
    assert status == 302 and back.startswith(f"http://127.0.0.1:{port}/kite/callback/"), (status, back)
    status, _, page = get(back, cookie)
    assert status == 200 and "Logged in to Kite" in page, page
    return page


def dead_token_calls(kite: FakeKite, since: int) -> list:
    return [c for c in kite.calls[since:] if c.headers.get("authorization", "").endswith(YESTERDAY)]


def test_the_morning_rollover_needs_only_a_login(desk, settings, tmp_path, django_user_model):
    from django.contrib.auth.models import Permission
    from rest_framework.authtoken.models import Token

    from oms.models import Strategy

    user, nifty, reliance, _ = desk
    user.user_permissions.add(*Permission.objects.filter(codename__in=["place_order", "login_kite"]))
    api_token = Token.objects.create(user=user).key
    Strategy.objects.create(name="live-desk", mode="LIVE", capital="10000000", algo_id="NSE-ALGO-4711")
    settings.KITE_API_KEY, settings.KITE_TOKEN_KEY = API_KEY, Fernet.generate_key().decode()
    settings.KITE_ACCESS_TOKEN = settings.KITE_ACCESS_TOKEN_FILE = ""
    session_save(access_token=YESTERDAY, user_id="XX0000", actor="desk")  # yesterday's login
    streamed = {nifty.instrument_token, reliance.instrument_token}
    redis = bool(os.environ.get("REDIS_URL"))

    port = free_port()
    with (
        FakeKite(api_key=API_KEY, api_secret=API_SECRET, access_token=YESTERDAY) as kite,
        FakeKiteLogin(kite, redirect_url=f"http://127.0.0.1:{port}/kite/callback/") as login_page,
        # One Kite: the ticker takes the tokens the REST API handed out and has not revoked.
        TickerThread(
            api_key=API_KEY, accepts=lambda token: token in kite.tokens, interval=0.2
        ) as ticker_thread,
    ):
        ticker = ticker_thread.simulator
        kite.prices["NSE:RELIANCE"] = Decimal("2400.55")
        kite_env = dict(
            KITE_API_KEY=API_KEY, KITE_API_SECRET=API_SECRET, KITE_TOKEN_KEY=settings.KITE_TOKEN_KEY,
            KITE_ACCESS_TOKEN="", KITE_ACCESS_TOKEN_FILE="", KITE_TICKER_URL=ticker.url, KITE_API_URL=kite.url,
            KITE_LOGIN_URL=login_page.url, KITE_REQUEST_TIMEOUT="5",
        )  # fmt: skip
        with contextlib.ExitStack() as processes:
            if redis:
                env = portal_env(redis=True, **kite_env)
                feed = processes.enter_context(running(
                    [sys.executable, str(BASE_DIR / "manage.py"), "run_ingestion"], env, tmp_path / "ingestion.log"
                ))  # fmt: skip
                processes.enter_context(running(uvicorn_argv(port), env, tmp_path / "web.log"))
            else:
                env = portal_env(redis=False, INGESTION_IN_PROCESS="1", INGESTION_SIMULATE="0", **kite_env)
                feed = processes.enter_context(running(uvicorn_argv(port), env, tmp_path / "web.log"))
            wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
            cookie = login_cookie(port, "desk", "desk-pass-123")

            # Yesterday's session: ticks stream, a LIVE order reaches Kite.
            ticks_until(port, cookie, lambda t: streamed <= set(t), timeout=30)
            first = order(port, api_token, "before-rollover")
            assert first["status"] != "REJECTED" and first["broker_order_id"], first
            pid = wait_for(
                lambda: health(port, cookie)["ingestion"].get("pid"), timeout=30, what="a heartbeat"
            )

            # 06:00 IST: Kite refuses yesterday's token on the ticker and the REST API.
            calls_before = len(kite.calls)
            kite.revoke(YESTERDAY)
            rolled_at = time.time()
            ticker_thread.call(ticker.rollover())
            wait_for(lambda: session_state().state == "login_needed", timeout=30, what="the refusal recorded")
            shown = wait_for(lambda: (h := health(port, cookie))["ingestion"].get("state") == "auth_failed" and h,
                             timeout=30, what="the feed says so")  # fmt: skip
            assert shown["ingestion"]["error"].startswith("Kite login needed")
            assert shown["kite"]["state"] == "login_needed"
            assert "Kite login needed" in shown["kite"]["detail"]

            # A LIVE order now: REJECTED, and Kite never hears the dead token again.
            refused = order(port, api_token, "after-rollover")
            assert refused["status"] == "REJECTED" and refused["status_message"].startswith(
                "Kite login needed"
            )
            assert dead_token_calls(kite, calls_before) == []

            # A desk member logs in to Kite: the same processes stream and trade again.
            log_in_to_kite(port, cookie)
            today = access_token()
            assert today and today != YESTERDAY and today in kite.tokens
            ticks_until(port, cookie, stamped_after(rolled_at, streamed), timeout=30)
            again = order(port, api_token, "after-login")
            assert again["status"] != "REJECTED" and again["broker_order_id"], again
            assert kite.calls[-1].headers["authorization"].endswith(today)
            assert feed.poll() is None and health(port, cookie)["ingestion"]["pid"] == pid  # never restarted
            # The dead token was tried once at the ticker (the refusal), never again.
            assert ticker.refused == {YESTERDAY: 1} and dead_token_calls(kite, calls_before) == []
    for log in tmp_path.glob("*.log"):
        text = log.read_text()
        assert "Traceback" not in text, text
        assert YESTERDAY not in text and today not in text, f"a token in {log.name}"
