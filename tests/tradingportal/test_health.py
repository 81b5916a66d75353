"""/healthz: required and informational checks, each on its own time limit; details only for
staff or the token; a failure that repeats is logged once, then rarely."""

import asyncio
import contextlib
import logging
import socket

import pytest
from django.test import override_settings

from tests.conftest import requires_redis
from tests.helpers import eventually
from tradingportal import health

pytestmark = pytest.mark.django_db

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
TOKEN = "healthz-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def _checks_settled():
    """A check left running by a test (a dead socket) must not answer for the next test."""
    yield
    for future in list(health._in_flight.values()):
        with contextlib.suppress(Exception):
            future.result(timeout=30)
    health._in_flight.clear()
    health._failures.clear()


@contextlib.contextmanager
def blackhole():
    """A TCP port that accepts connections and never answers (a hung Redis)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        server.close()


def redis_cache(url, *, timeout=0.5):
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": timeout, "SOCKET_TIMEOUT": timeout},
        }
    }


def redis_layer(url, *, timeout=0.5):
    host = {"address": url, "socket_timeout": timeout, "socket_connect_timeout": timeout}
    return {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [host]}}}


def test_anonymous_callers_get_the_status_and_each_checks_ok_only(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"ok", "status", "checks", "kite"}
    assert body["ok"] is True
    assert set(body["checks"]) == {"database", "cache", "channel_layer", "worker", "ingestion"}
    assert all(set(check) == {"ok"} for check in body["checks"].values())
    assert (
        body["checks"]["database"]["ok"]
        and body["checks"]["cache"]["ok"]
        and body["checks"]["channel_layer"]["ok"]
    )
    # No cluster and no feed run in this test: reported, but they do not make it a 503.
    assert body["checks"]["worker"] == {"ok": False} and body["checks"]["ingestion"] == {"ok": False}
    assert body["status"] == "degraded"
    assert response["Cache-Control"] == "no-store"


def test_staff_see_the_details(client, staff_user):
    client.force_login(staff_user)
    body = client.get("/healthz").json()
    assert {"latency_ms"} <= set(body["checks"]["database"])
    worker = body["checks"]["worker"]
    assert worker["state"] == "down" and worker["clusters"] == [] and "error" in worker
    assert body["ingestion"] == {"running": False}
    assert "no ingestion" in body["checks"]["ingestion"]["error"]


def test_a_logged_in_user_who_is_not_staff_gets_no_details(client, plain_user):
    client.force_login(plain_user)
    body = client.get("/healthz").json()
    assert set(body) == {"ok", "status", "checks", "kite"}


@override_settings(HEALTHZ_TOKEN=TOKEN)
def test_the_bearer_token_shows_the_details_and_a_wrong_one_does_not(client):
    good = client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert "latency_ms" in good["checks"]["cache"] and "ingestion" in good
    wrong = client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN[:-1]}x"}).json()
    assert set(wrong) == {"ok", "status", "checks", "kite"}
    assert set(client.get("/healthz", headers={"Authorization": TOKEN}).json()) == {
        "ok",
        "status",
        "checks",
        "kite",
    }


def test_without_a_configured_token_no_bearer_value_is_accepted(client):
    body = client.get("/healthz", headers={"Authorization": "Bearer "}).json()
    assert set(body) == {"ok", "status", "checks", "kite"}


@override_settings(HEALTHZ_TOKEN=TOKEN)
def test_healthz_is_503_when_the_cache_is_down(client):
    with override_settings(CACHES=redis_cache(UNREACHABLE_REDIS)):
        anonymous = client.get("/healthz")
        detailed = client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert anonymous.status_code == 503
    assert anonymous.json()["checks"]["cache"] == {"ok": False}
    assert anonymous.json()["status"] == "failing"
    body = detailed.json()
    assert body["ok"] is False
    assert "ConnectionError" in body["checks"]["cache"]["error"]
    assert body["checks"]["database"]["ok"] is True


def test_healthz_is_503_when_the_channel_layer_is_down(client):
    with override_settings(CHANNEL_LAYERS=redis_layer(UNREACHABLE_REDIS)):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["channel_layer"]["ok"] is False


@override_settings(HEALTH_CHECK_TIMEOUT=0.3, HEALTHZ_TOKEN=TOKEN)
def test_each_check_has_its_own_time_limit_and_they_run_side_by_side(client):
    # Both dependencies hang (connections accepted, never answered) far longer than the
    # checks' limit: each check gives up on its own limit and says so, and the rest answer.
    with blackhole() as hung, override_settings(CACHES=redis_cache(hung, timeout=20),
                                                CHANNEL_LAYERS=redis_layer(hung, timeout=20)):  # fmt: skip
        response = client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    body = response.json()
    assert response.status_code == 503
    assert body["checks"]["cache"]["error"] == "no answer within 0.3s"
    assert body["checks"]["channel_layer"]["error"] == "no answer within 0.3s"
    assert body["checks"]["database"]["ok"] is True


@override_settings(HEALTH_CHECK_TIMEOUT=0.3)
def test_a_check_still_hanging_is_awaited_not_started_again(client):
    with blackhole() as hung, override_settings(CACHES=redis_cache(hung, timeout=20)):
        client.get("/healthz")
        first = health._in_flight["cache"]
        client.get("/healthz")
        assert health._in_flight["cache"] is first and not first.done()


@override_settings(HEALTHZ_TOKEN=TOKEN)
def test_the_redis_password_is_not_shown(client):
    secret_url = "redis://:hunter2-redis-pass@127.0.0.1:1/0"
    with override_settings(CACHES=redis_cache(secret_url), REDIS_URL=secret_url):
        response = client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert "ConnectionError" in response.json()["checks"]["cache"]["error"]
    assert response.status_code == 503
    assert "hunter2-redis-pass" not in response.content.decode()


def test_a_repeated_failure_is_logged_once_then_its_recovery(client, caplog):
    with caplog.at_level(logging.INFO, logger="tradingportal.health"):
        with override_settings(CACHES=redis_cache(UNREACHABLE_REDIS)):
            for _ in range(5):
                assert client.get("/healthz").status_code == 503
        assert client.get("/healthz").status_code == 200
    cache_lines = [r.getMessage() for r in caplog.records if "'cache'" in r.getMessage()]
    assert cache_lines == ["health check 'cache' failed", "health check 'cache' works again after 5 failures"]


@requires_redis
def test_the_channel_layer_check_does_not_wait_behind_a_consumers_blocking_read(settings):
    """A consumer of this process waiting on its channel holds channels-redis's receive
    lock through a 5 s blocking read; the check must not queue behind it."""
    from channels.layers import get_channel_layer

    settings.HEALTH_CHECK_TIMEOUT = 1.0

    async def scenario():
        layer = get_channel_layer()
        consumer = asyncio.create_task(layer.receive(await layer.new_channel()))
        await eventually(lambda: layer.receive_lock is not None and layer.receive_lock.locked(),
                         what="the consumer to hold the receive lock")  # fmt: skip
        try:
            return await health._run("channel_layer", health.channel_layer_check())
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer

    result = asyncio.run(scenario())
    assert result["ok"] is True, result


def test_admin_is_branded(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert "Kite Trading Desk" in response.content.decode()
