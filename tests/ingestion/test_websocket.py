"""``/ws/ticks/`` as an attacker with a login meets it: a real uvicorn, the ``websockets``
client, logged in through the login page like a browser."""

import asyncio
import json
import os

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import requires_redis
from tests.factories import InstrumentFactory
from tests.helpers import free_port, login_cookie, port_open, portal_env, running, uvicorn_argv, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
PASSWORD = "desk-pass-123"


@pytest.fixture
def desk_user(django_user_model, settings):
    # Real processes use the product's hashers, not the tests' fast one.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    return django_user_model.objects.create_user(username="desk", password=PASSWORD)


def web(tmp_path, name="web", **env):
    port = free_port()
    process = running(uvicorn_argv(port), portal_env(redis=True, **env), tmp_path / f"{name}.log")
    return port, process


def handshake(port, *, origin=None, cookie=None, host=None) -> int:
    headers = {}
    if cookie:
        headers["Cookie"] = cookie
    if host:
        headers["Host"] = host

    async def run():
        try:
            async with connect(f"ws://127.0.0.1:{port}/ws/ticks/", origin=origin, additional_headers=headers,
                               open_timeout=10):  # fmt: skip
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(run())


def socket(port, cookie):
    return connect(f"ws://127.0.0.1:{port}/ws/ticks/", origin=f"http://127.0.0.1:{port}",
                   additional_headers={"Cookie": cookie}, open_timeout=10, max_size=2**24)  # fmt: skip


async def until(ws, kind, timeout=10.0):
    """The next server message of ``kind`` (status and tick frames in between skipped)."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message["type"] == kind:
            return message


async def closed(ws, timeout=10.0):
    """Read until the server closes; the close frame it sent (code, reason)."""
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    assert ws.protocol.close_rcvd is not None, "dropped without a close frame"
    return ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason


def test_the_origin_must_be_the_portals_own_scheme_host_and_port(desk_user, tmp_path):
    port, process = web(tmp_path, CSRF_TRUSTED_ORIGINS="https://desk.example.com,https://*.trading.example")
    with process:
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        cookie = login_cookie(port, "desk", PASSWORD)
        assert handshake(port, origin=f"http://127.0.0.1:{port}", cookie=cookie) == 101
        assert handshake(port, origin="http://127.0.0.1:9999", cookie=cookie) == 403  # another port
        assert handshake(port, origin=f"https://127.0.0.1:{port}", cookie=cookie) == 403  # another scheme
        assert handshake(port, origin="http://evil.example", cookie=cookie) == 403
        assert handshake(port, origin=None, cookie=cookie) == 403  # not a browser: say where you are from
        # A Host the portal does not serve cannot make its own origin look right.
        assert handshake(port, origin="http://evil.example", host="evil.example", cookie=cookie) == 403
        # CSRF_TRUSTED_ORIGINS, as for forms (a TLS proxy in front: the browser says https).
        assert handshake(port, origin="https://desk.example.com", cookie=cookie) == 101
        assert handshake(port, origin="https://desk.trading.example", cookie=cookie) == 101
        assert handshake(port, origin="http://desk.example.com", cookie=cookie) == 403
        assert handshake(port, origin=f"http://127.0.0.1:{port}") == 403  # and logged in, always


def _group_members():
    """channels-redis' members of the ``ticks`` group of the web process under test."""
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    return client.zcard(f"e2e{os.getpid()}:group:ticks")


def test_oversized_and_deeply_nested_frames_are_closed_with_a_code_and_leave_nothing_behind(
    desk_user, tmp_path
):
    port, process = web(tmp_path, WS_MAX_CONNECTIONS_PER_USER="2")
    with process:
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        cookie = login_cookie(port, "desk", PASSWORD)

        async def run():
            async with socket(port, cookie) as ws:
                await ws.send("[" * 100000)
                assert "nested too deep" in (await until(ws, "error"))["message"]
                assert (await closed(ws))[0] == 1008
            async with socket(port, cookie) as ws:
                await ws.send(json.dumps({"action": "subscribe", "tokens": list(range(200000))}))
                assert "too long" in (await until(ws, "error"))["message"]
                assert (await closed(ws))[0] == 1009
            # Both closed sockets gave their slots back: two fit again, a third does not.
            async with socket(port, cookie) as first, socket(port, cookie) as second:
                for ws in (first, second):
                    await ws.send(json.dumps({"action": "subscribe", "tokens": [1]}))
                    assert (await until(ws, "subscribed"))["tokens"] == [1]
                async with socket(port, cookie) as third:
                    assert "at most 2 per user" in (await until(third, "error"))["message"]
                    assert (await closed(third))[0] == 1008
                # Still working after all that.
                await first.send(json.dumps({"action": "subscribe", "tokens": None}))
                assert (await until(first, "subscribed"))["tokens"] is None

        asyncio.run(run())
        if os.environ.get("REDIS_URL"):
            wait_for(lambda: _group_members() == 0, timeout=10, what="every socket left the group")
    log = (tmp_path / "web.log").read_text()
    assert "Task was destroyed" not in log and "RecursionError" not in log
    assert "Traceback" not in log, log


BAD_MESSAGES = [
    "not json",
    "[1, 2]",
    '{"action": "dance"}',
    '{"action": "subscribe", "tokens": "1"}',
    '{"action": "subscribe", "tokens": [true]}',
    '{"action": "subscribe", "preset": "x"}',
]


def test_bad_messages_get_an_error_and_the_socket_stays_open(desk_user, tmp_path):
    port, process = web(tmp_path)
    with process:
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        cookie = login_cookie(port, "desk", PASSWORD)

        async def run():
            async with socket(port, cookie) as ws:
                for bad in BAD_MESSAGES:
                    await ws.send(bad)
                    assert (await until(ws, "error"))["message"]
                await ws.send(b"\x00\x01")
                assert "text" in (await until(ws, "error"))["message"]
                await ws.send(json.dumps({"action": "subscribe", "tokens": [5]}))
                assert (await until(ws, "subscribed"))["tokens"] == [5]

        asyncio.run(run())
    assert "Traceback" not in (tmp_path / "web.log").read_text()


def test_subscribing_to_a_preset_and_its_watchlist_alias(desk_user, tmp_path):
    nifty = InstrumentFactory(
        instrument_token=256265, tradingsymbol="NIFTY 50", segment="INDICES", is_active=True
    )
    future = InstrumentFactory(
        exchange="NFO", segment="NFO-FUT", name="NIFTY", instrument_type="FUT", is_active=True
    )
    InstrumentFactory(exchange="NFO", segment="NFO-FUT", name="NIFTY", instrument_type="FUT", is_active=False)
    InstrumentFactory(tradingsymbol="SBIN", is_active=True)
    expected = sorted([nifty.instrument_token, future.instrument_token])
    port, process = web(tmp_path)
    with process:
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        cookie = login_cookie(port, "desk", PASSWORD)

        async def run():
            async with socket(port, cookie) as ws:
                await ws.send(json.dumps({"action": "subscribe", "preset": "nifty"}))
                assert (await until(ws, "subscribed"))["tokens"] == expected
                await ws.send(json.dumps({"action": "subscribe", "watchlist": "nifty"}))
                assert (await until(ws, "subscribed"))["tokens"] == expected
                await ws.send(json.dumps({"action": "subscribe", "preset": "midcap"}))
                assert "unknown preset" in (await until(ws, "error"))["message"]

        asyncio.run(run())


@requires_redis
def test_the_per_user_cap_holds_across_web_processes(desk_user, tmp_path):
    port_a, process_a = web(tmp_path, name="web-a", WS_MAX_CONNECTIONS_PER_USER="2")
    port_b, process_b = web(tmp_path, name="web-b", WS_MAX_CONNECTIONS_PER_USER="2")
    with process_a, process_b:
        wait_for(lambda: port_open(port_a) and port_open(port_b), timeout=30, what="two uvicorns")
        cookie = login_cookie(port_a, "desk", PASSWORD)  # one session, valid on both (shared store)

        async def run():
            async with socket(port_a, cookie) as on_a, socket(port_b, cookie) as on_b:
                for ws in (on_a, on_b):
                    await ws.send(json.dumps({"action": "subscribe", "tokens": [1]}))
                    await until(ws, "subscribed")
                for port in (port_a, port_b):
                    async with socket(port, cookie) as extra:
                        assert "at most 2 per user" in (await until(extra, "error"))["message"]
                        assert (await closed(extra))[0] == 1008
            async with socket(port_b, cookie) as again:  # their slots came back on close
                await again.send(json.dumps({"action": "subscribe", "tokens": [1]}))
                await until(again, "subscribed")

        asyncio.run(run())


@requires_redis
def test_an_order_change_tells_the_dashboard_to_reread_without_saying_whose(desk_user, tmp_path):
    """The panel polls anyway; the ``oms`` frame makes it re-read at once. It carries nothing."""
    import urllib.request

    from django.contrib.auth.models import Permission
    from rest_framework.authtoken.models import Token

    InstrumentFactory(tradingsymbol="RELIANCE", instrument_token=738561, is_active=True)
    desk_user.user_permissions.add(Permission.objects.get(codename="place_order"))
    token = Token.objects.create(user=desk_user).key
    port, process = web(tmp_path)
    with process:
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        cookie = login_cookie(port, "desk", PASSWORD)

        async def run():
            async with socket(port, cookie) as ws:
                body = json.dumps({"instrument_token": 738561, "transaction_type": "BUY", "quantity": 1,
                                   "product": "MIS", "order_type": "LIMIT", "price": "10.00"}).encode()  # fmt: skip
                request = urllib.request.Request(f"http://127.0.0.1:{port}/api/orders/", data=body, method="POST",
                                                 headers={"Authorization": f"Token {token}",
                                                          "Content-Type": "application/json"})  # fmt: skip
                await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=10).read())
                return await until(ws, "oms")

        assert asyncio.run(run()) == {"type": "oms"}
