"""``/api/ticks/latest/``: receive times, ``max_age``, bad input and a store that is down."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient, APIRequestFactory, force_authenticate

from ingestion.latest import latest_store
from ingestion.views import LatestTicksView

pytestmark = pytest.mark.django_db
TICK = '{"instrument_token":%d,"last_price":"101.5"}'


@pytest.fixture
def api(plain_user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=plain_user).key}")
    return client


def test_each_tick_says_when_it_was_received_and_max_age_drops_old_ones(api):
    now = timezone.now()
    latest_store({1: TICK % 1}, received_at=now - timedelta(minutes=10))
    latest_store({2: TICK % 2}, received_at=now)

    body = api.get("/api/ticks/latest/?tokens=1,2,3").json()
    assert body["ticks"]["1"]["last_price"] == "101.5" and body["ticks"]["3"] is None
    assert body["ticks"]["1"]["received_at"].endswith("+05:30")

    fresh = api.get("/api/ticks/latest/?tokens=1,2,3&max_age=5").json()["ticks"]
    assert fresh["1"] is None and fresh["2"]["last_price"] == "101.5" and fresh["3"] is None
    assert api.get("/api/ticks/latest/?tokens=1&max_age=3600").json()["ticks"]["1"] is not None


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "1e999", "", "5s", "²"])
def test_a_bad_max_age_is_a_400_with_the_reason(api, value):
    response = api.get("/api/ticks/latest/", {"tokens": "1", "max_age": value})
    assert response.status_code == 400
    assert "max_age" in response.json()["detail"]


@pytest.mark.parametrize("tokens", ["x", "1,²", "9" * 5000, ""])
def test_bad_tokens_are_a_400_with_the_reason(api, tokens):
    response = api.get("/api/ticks/latest/", {"tokens": tokens})
    assert response.status_code == 400 and "tokens" in response.json()["detail"]


UNREACHABLE_CACHE = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:9/0",  # the discard port: nothing listens there
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    }
}


def test_a_store_that_is_down_is_a_json_503_not_a_500(plain_user):
    # The view alone: the API's throttles count in the same cache and fail before it
    # (theirs to handle: tradingportal/security.py).
    view = LatestTicksView.as_view(throttle_classes=())
    request = APIRequestFactory().get("/api/ticks/latest/?tokens=256265")
    force_authenticate(request, user=plain_user)
    with override_settings(CACHES=UNREACHABLE_CACHE):
        response = view(request)
        response.render()
    assert response.status_code == 503
    assert response["Content-Type"].startswith("application/json")
    assert "unreachable" in response.data["detail"]
