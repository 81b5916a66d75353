"""With Redis away, the OMS answers: reads work, no order goes out uncounted."""

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from oms.models import Order

pytestmark = pytest.mark.django_db

DOWN = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.3, "SOCKET_TIMEOUT": 0.3},
    }
}


def test_a_redis_outage_refuses_new_orders_clearly_and_keeps_reads_and_cancels(reliance, trader, caplog):
    client = APIClient()
    client.force_authenticate(trader)
    with override_settings(CACHES=DOWN, SESSION_ENGINE="django.contrib.sessions.backends.db"):
        assert client.get("/api/orders/").status_code == 200  # the throttles fail open
        assert client.get("/api/positions/").status_code == 200
        response = client.post("/api/orders/", {"instrument_token": 738561, "transaction_type": "BUY", "quantity": 1,
                                                "product": "MIS", "order_type": "LIMIT", "price": "100"}, format="json")  # fmt: skip
        assert response.status_code == 429
        assert response.json()["rule"] == "rate_limit" and "cache is unreachable" in response.json()["detail"]
        market = client.post("/api/orders/", {"instrument_token": 738561, "transaction_type": "BUY", "quantity": 1,
                                              "product": "MIS", "order_type": "MARKET"}, format="json")  # fmt: skip
        assert market.status_code == 409 and market.json()["rule"] == "no_live_price"
    assert Order.objects.filter(status="RISK REJECTED").count() == 2
