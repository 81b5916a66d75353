"""LIVE trading on Kite end to end, with real processes: the runner (web, worker, ingestion)
reaches a fake Kite REST server (tests/fakes/kite_rest.py) through KITE_API_URL; a token
client places an order on a LIVE strategy over the API; Kite fills it; a signed postback and
the worker's reconciliation schedule bring our order and position to Kite's; ``manage.py
reconcile`` runs as a subprocess (exit 0, exit 6 with Kite stopped) and a difference made at
Kite becomes one reconciliation issue, not one per run."""

import hashlib
import json
from decimal import Decimal

import pytest

from oms.models import Mode, Order, Position, Strategy
from tests.conftest import requires_redis
from tests.e2e.test_oms_runner import Client
from tests.e2e.test_runner import portal, runner_env
from tests.factories import InstrumentFactory
from tests.fakes.kite_rest import FakeKite, dumps
from tests.helpers import free_port, manage, portal_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def kite_env(kite: FakeKite, **extra: str) -> dict[str, str]:
    """The portal configured for the fake Kite: REST at the fake, a bootstrap token, the
    postback secret; the ticker at a closed port (the feed is not under test here)."""
    return {
        "KITE_API_URL": kite.url,
        "KITE_API_KEY": kite.api_key,
        "KITE_API_SECRET": kite.api_secret,
        "KITE_ACCESS_TOKEN": kite.access_token,
        "KITE_TICKER_URL": f"ws://127.0.0.1:{free_port()}",
        "KITE_REQUEST_TIMEOUT": "3",
        "RECONCILE_SECONDS": "10",
        **extra,
    }


def signed_postback(kite: FakeKite, order_id: str) -> dict:
    """Kite's postback for the order's latest row, with its checksum."""
    row = json.loads(dumps(kite.order(order_id)))
    checksum = hashlib.sha256(
        f"{row['order_id']}{row['order_timestamp']}{kite.api_secret}".encode()
    ).hexdigest()
    return {**row, "checksum": checksum, "user_id": "XX0000", "app_id": 1}


def reconcile(env: dict[str, str]):
    """``manage.py reconcile --json`` as a desk runs it; exit 5 (the worker's run holds the
    lock right now) is tried again, as its message says."""

    def ran():
        done = manage("reconcile", "--json", env=env)
        return done if done.returncode != 5 else None

    return wait_for(ran, timeout=120, interval=1, what="manage.py reconcile to get the lock")


@pytest.fixture
def infy(db):
    return InstrumentFactory(tradingsymbol="INFY", name="INFOSYS", instrument_token=408065, exchange="NSE",
                             segment="NSE", tick_size=Decimal("0.05"), lot_size=1, is_active=True)  # fmt: skip


@pytest.mark.postgres
@requires_redis
def test_a_live_order_reaches_kite_once_and_postback_and_reconciliation_bring_it_to_kites_state(
    tmp_path, django_user_model, infy
):
    from rest_framework.authtoken.models import Token

    Strategy.objects.create(
        name="live-desk", mode=Mode.LIVE, capital=Decimal("10000000"), algo_id="NSE-ALGO-4711"
    )
    desk = django_user_model.objects.create_superuser("desk", password="desk-pass-123")
    port = free_port()
    with FakeKite() as kite:
        kite.instrument_tokens["NSE:INFY"] = 408065
        env = runner_env(tmp_path, redis=True, port=port, **kite_env(kite))
        with portal(tmp_path, env) as started:
            api = Client(port, Token.objects.create(user=desk).key)
            body = {"strategy": "live-desk", "exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY",
                    "quantity": 10, "product": "MIS", "order_type": "SL-M", "trigger_price": "1500.00"}  # fmt: skip
            status, placed = api.call("POST", "/api/orders/", body, **{"Idempotency-Key": "e2e-live-buy"})
            assert status == 201, placed
            status, again = api.call("POST", "/api/orders/", body, **{"Idempotency-Key": "e2e-live-buy"})
            assert status == 200 and again["id"] == placed["id"]

            [call] = kite.placements()
            assert call.form["tag"] == f"TP{placed['id']}" and call.form["algo_id"] == "NSE-ALGO-4711"
            assert call.form["quantity"] == "10" and Decimal(call.form["trigger_price"]) == Decimal("1500")
            assert call.form["order_type"] == "SL-M" and call.form["market_protection"] == "-1"
            assert call.headers["authorization"] == f"token {kite.api_key}:{kite.access_token}"
            order = Order.objects.get(pk=placed["id"])
            assert order.broker == "kite" and order.broker_order_id

            # It fills at Kite in two trades; a correctly signed postback says COMPLETE (a forged one
            # is refused). A postback carries no trades: COMPLETE waits for the fills, which the
            # worker's reconciliation (Kite's trade book) brings.
            kite.fill(order.broker_order_id, quantity=4, price="1500.05")
            kite.fill(order.broker_order_id, price="1500.10")
            postback = signed_postback(kite, order.broker_order_id)
            assert postback["status"] == "COMPLETE"
            assert api.call("POST", "/api/kite/postback/", {**postback, "checksum": "0" * 64})[0] == 403
            status, answer = api.call("POST", "/api/kite/postback/", postback)
            assert status == 200 and answer["known"], answer

            def complete():
                order.refresh_from_db()
                return order.status == "COMPLETE" and order.filled_quantity == 10 and order

            started.wait(
                complete, timeout=180, what="the worker's reconciliation to bring the order to COMPLETE"
            )
            assert len(kite.placements()) == 1  # never sent again
            position = Position.objects.get(instrument=infy, product="MIS")
            assert position.quantity == 10 and position.average_price == Decimal("1500.08")
            status, trades = api.call("GET", "/api/trades/?strategy=live-desk")
            assert status == 200 and sum(t["quantity"] for t in trades["results"]) == 10

            # manage.py reconcile, as a desk runs it: exit 0 with the report.
            command_env = {**portal_env(redis=True), **kite_env(kite)}
            done = reconcile(command_env)
            assert done.returncode == 0, done.stderr
            report = json.loads(done.stdout)
            assert report["status"] and report["run"] and not report["error"]

            # An order placed at Kite outside the portal: a difference is recorded once a second run
            # confirms it (Kite's books lag each other), then it is one issue, not one per run.
            kite.place_direct(exchange="NSE", tradingsymbol="INFY", transaction_type="SELL", quantity=3)

            def open_issues():
                status, page = api.call("GET", "/api/reconciliation/issues/?resolved=false")
                assert status == 200, page
                return sorted((issue["id"], issue["kind"]) for issue in page["results"])

            assert reconcile(command_env).returncode == 0
            done = reconcile(command_env)
            assert done.returncode == 0, done.stderr
            first = open_issues()
            assert first, f"the order placed at Kite outside the portal was not recorded: {done.stdout}"
            assert {kind for _, kind in first} == {"order_unknown", "position_quantity"}, first
            assert len(first) == 2, first  # each difference once, whichever run (the worker's too) found it
            assert reconcile(command_env).returncode == 0
            assert open_issues() == first

    # Kite stopped: the command says it could not reach Kite (exit 6), nothing else.
    done = reconcile({**portal_env(redis=True), **kite_env(kite, KITE_REQUEST_TIMEOUT="1")})
    assert done.returncode == 6, (done.returncode, done.stdout, done.stderr)


@pytest.mark.postgres
@requires_redis
def test_a_web_process_killed_while_kite_places_the_order_leaves_it_found_by_its_tag_not_sent_twice(
    tmp_path, django_user_model, infy
):
    """Kite takes the order, but the web process dies before it hears the answer: the order
    stays "unknown at broker" (never rejected, never sent again); the worker's reconciliation
    finds it by its tag and applies Kite's state; the caller's retry (same key) is that order."""
    import signal
    import threading

    from rest_framework.authtoken.models import Token

    Strategy.objects.create(name="live-desk", mode=Mode.LIVE, capital=Decimal("10000000"))
    desk = django_user_model.objects.create_superuser("desk", password="desk-pass-123")
    port = free_port()
    with FakeKite() as kite:
        env = runner_env(tmp_path, redis=True, port=port, **kite_env(kite, KITE_REQUEST_TIMEOUT="30"))
        with portal(tmp_path, env) as started:
            api = Client(port, Token.objects.create(user=desk).key)
            body = {"strategy": "live-desk", "exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY",
                    "quantity": 2, "product": "MIS", "order_type": "LIMIT", "price": "1500.00"}  # fmt: skip
            kite.fail_next(
                "timeout", accept=True, method="POST", path="/orders/"
            )  # carried out, never answered
            caller = threading.Thread(
                target=lambda: _quietly(
                    api.call, "POST", "/api/orders/", body, **{"Idempotency-Key": "e2e-killed"}
                ),
                daemon=True,
            )
            caller.start()
            wait_for(lambda: kite.orders(), timeout=30, what="Kite to have the order")
            web = started.children()["web"]
            web.send_signal(signal.SIGKILL)
            kite.release()
            caller.join(timeout=30)

            order = Order.objects.get(idempotency_key="e2e-killed")
            [at_kite] = kite.orders()

            def found():
                order.refresh_from_db()
                return order.broker_order_id == at_kite["order_id"] and order.status == "OPEN"

            started.wait(found, timeout=180, what="reconciliation to find the order at Kite by its tag")
            assert len(kite.placements()) == 1

            def answering():
                return _quietly(api.call, "GET", "/api/orders/")[0] == 200

            started.wait(answering, timeout=120, what="the runner to restart the web process")
            status, again = api.call("POST", "/api/orders/", body, **{"Idempotency-Key": "e2e-killed"})
            assert status == 200 and again["id"] == order.pk and again["status"] == "OPEN"
            assert len(kite.placements()) == 1


def _quietly(call, *args, **kwargs):
    """A call through a connection that may die with its server: (0, None) when it did."""
    try:
        return call(*args, **kwargs)
    except OSError:
        return 0, None
