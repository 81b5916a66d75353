"""Paper trading as a desk meets it: `make run` on the simulator, a token client places a
MARKET buy and sell over the API and sees the fills and a flat position with its P&L."""

import json
import urllib.error
import urllib.request
from decimal import Decimal

import pytest

from tests.conftest import requires_redis
from tests.e2e.test_runner import portal, runner_env
from tests.factories import InstrumentFactory
from tests.helpers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class Client:
    def __init__(self, port: int, token: str) -> None:
        self.base, self.headers = f"http://127.0.0.1:{port}", {"Authorization": f"Token {token}"}

    def call(self, method: str, path: str, body: dict | None = None, **headers: str):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={**self.headers, "Content-Type": "application/json", **headers})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)


@pytest.mark.parametrize("redis", [False, pytest.param(True, marks=[requires_redis, pytest.mark.postgres])],
                         ids=["embedded", "redis"])  # fmt: skip
def test_a_token_client_trades_on_the_simulator_and_sees_a_flat_position_with_its_pnl(
    tmp_path, django_user_model, redis
):
    from rest_framework.authtoken.models import Token

    InstrumentFactory(tradingsymbol="RELIANCE", name="RELIANCE INDUSTRIES", instrument_token=738561,
                      exchange="NSE", segment="NSE", last_price=Decimal("2500.00"), tick_size=Decimal("0.05"),
                      is_active=True, stream_mode="full")  # fmt: skip
    desk = django_user_model.objects.create_superuser("desk", password="desk-pass-123")
    port = free_port()
    with portal(tmp_path, runner_env(tmp_path, redis=redis, port=port)) as started:
        api = Client(port, Token.objects.create(user=desk).key)

        def priced():
            status, body = api.call("GET", "/api/ticks/latest/?tokens=738561&max_age=5")
            return status == 200 and body["ticks"]["738561"]

        tick = started.wait(priced, timeout=120, what="a live RELIANCE price from the simulator")
        assert Decimal(tick["last_price"]) > 0

        order = {"exchange": "NSE", "tradingsymbol": "RELIANCE", "transaction_type": "BUY", "quantity": 10,
                 "product": "MIS", "order_type": "MARKET"}  # fmt: skip
        status, buy = api.call("POST", "/api/orders/", order, **{"Idempotency-Key": "e2e-buy"})
        assert status == 201, buy
        assert buy["status"] == "COMPLETE" and buy["filled_quantity"] == 10 and buy["pending_quantity"] == 0
        # The same key again is the same order, not a second buy.
        status, again = api.call("POST", "/api/orders/", order, **{"Idempotency-Key": "e2e-buy"})
        assert status == 200 and again["id"] == buy["id"]

        status, sell = api.call("POST", "/api/orders/", {**order, "transaction_type": "SELL"},
                                **{"Idempotency-Key": "e2e-sell"})  # fmt: skip
        assert status == 201 and sell["status"] == "COMPLETE", sell

        status, trades = api.call("GET", "/api/trades/?strategy=manual")
        assert status == 200 and len(trades["results"]) == 2
        status, positions = api.call("GET", "/api/positions/")
        [position] = [p for p in positions if p["tradingsymbol"] == "RELIANCE"]
        expected = (Decimal(sell["average_price"]) - Decimal(buy["average_price"])) * 10
        assert position["quantity"] == 0 and Decimal(position["realised"]) == expected
        assert Decimal(position["unrealised"]) == 0
        status, pnl = api.call("GET", "/api/pnl/")
        assert status == 200 and Decimal(pnl["realised"]) == expected
