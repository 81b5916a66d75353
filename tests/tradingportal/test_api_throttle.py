"""DRF throttles on the whole API: strict per anonymous address, generous per user; a
throttled call is a 429 with Retry-After, counted in the shared cache."""

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.authtoken.models import Token

from tests.conftest import requires_redis

pytestmark = pytest.mark.django_db

LIST = "/api/instruments/"


def test_default_rates_allow_a_strategy_polling_several_times_a_second(settings):
    assert settings.API_THROTTLE_USER == "1200/min"
    assert settings.API_THROTTLE_ANON == "30/min"


def test_anonymous_callers_are_throttled_per_address(settings):
    settings.API_THROTTLE_ANON = "5/min"
    client = Client()
    statuses = [client.get(LIST, REMOTE_ADDR="203.0.113.5").status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]  # refused calls count: a token guesser is slowed too
    throttled = client.get(LIST, REMOTE_ADDR="203.0.113.5")
    assert throttled.status_code == 429
    assert 0 < int(throttled["Retry-After"]) <= 60
    assert "throttled" in throttled.json()["detail"].lower()
    # Another address is not affected.
    assert client.get(LIST, REMOTE_ADDR="198.51.100.1").status_code == 401


def test_wrong_tokens_count_against_the_anonymous_rate(settings):
    settings.API_THROTTLE_ANON = "3/min"
    client = Client()
    statuses = [client.get(LIST, HTTP_AUTHORIZATION=f"Token {'0' * 39}{n}").status_code for n in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_users_are_throttled_per_user_across_addresses(settings, plain_user, staff_user):
    settings.API_THROTTLE_USER = "4/min"
    token = Token.objects.create(user=plain_user)
    client = Client(HTTP_AUTHORIZATION=f"Token {token.key}")
    statuses = [client.get(LIST, REMOTE_ADDR=f"10.0.0.{n}").status_code for n in range(5)]
    assert statuses == [200] * 4 + [429]
    throttled = client.get("/api/ticks/latest/?tokens=1")  # every API view, not just one
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    other = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff_user).key}")
    assert other.get(LIST).status_code == 200


def test_schema_and_docs_are_throttled_too(settings, trader_client):
    settings.API_THROTTLE_USER = "2/min"
    assert trader_client.get("/api/schema/").status_code == 200
    assert trader_client.get("/api/schema/").status_code == 200
    assert trader_client.get("/api/schema/").status_code == 429


def test_an_invalid_rate_is_refused_at_start():
    from tests.helpers import child_env, run_python

    result = run_python("import django; django.setup()", child_env(API_THROTTLE_USER="fast"))
    assert result.returncode != 0
    assert "API_THROTTLE_USER='fast' is not a rate" in result.stderr


@requires_redis
def test_throttle_history_lives_in_redis_for_every_web_worker(settings, plain_user):
    """The counts are in the shared cache, so every uvicorn worker sees the same ones."""
    import redis

    settings.API_THROTTLE_USER = "10/min"
    token = Token.objects.create(user=plain_user)
    client = Client(HTTP_AUTHORIZATION=f"Token {token.key}")
    for _ in range(3):
        assert client.get(LIST).status_code == 200
    key = cache.make_key(f"throttle_user_{plain_user.pk}")
    raw = redis.Redis.from_url(settings.REDIS_URL)
    assert raw.exists(key)
    assert len(cache.get(f"throttle_user_{plain_user.pk}")) == 3
