"""LIVE orders through the services to a fake Kite REST server (reached through KITE_API_URL,
never a patched client): sent after the placement commits, every outcome Kite can have mapped
to a clear state, unknown outcomes never placed twice, modify and cancel when Kite does not
answer, and the exchange's freeze quantities."""

import threading
from decimal import Decimal as D

import pytest
from django.db import connection, transaction

from alerts.models import Alert, Kind
from oms import state
from oms.brokers.kite import KiteBroker
from oms.models import Order, OrderEvent, Position, Strategy, Trade
from oms.services import OrderError, OutcomeUnknown, RateLimited, order_cancel, order_modify
from oms.updates import order_update
from tests.helpers import wait_for
from tests.oms.helpers import place, price
from tests.oms.live_fixtures import new_token

pytest_plugins = ["tests.oms.live_fixtures"]  # kite, live, infy, nifty_ce

# Committed for real: the send happens after the commit, and some tests race two threads.
pytestmark = pytest.mark.django_db(transaction=True)


def events(order, kind):
    return list(OrderEvent.objects.filter(order=order, kind=kind).order_by("id"))


def poll(order):
    """What the poll does for one order: Kite's row and trades through the update service."""
    found = KiteBroker().find(order)
    assert found is not None
    order_update(order_id=order.pk, update=found, source="poll", broker="kite")
    order.refresh_from_db()
    return order


def market_buy(infy, *, key=None, quantity=10, **fields):
    price(infy.instrument_token, "1500.05")
    return place(infy, strategy="live-desk", key=key, quantity=quantity, **fields)


# --- sent once, after the commit, with Kite's fields ------------------------------------------------


def test_a_live_market_order_reaches_kite_once_with_our_tag_algo_id_and_market_protection(kite, live, infy):
    result = market_buy(infy)
    order = result.order
    [call] = kite.placements()
    assert call.form["tag"] == f"TP{order.pk}" and call.form["algo_id"] == "NSE-ALGO-4711"
    assert call.form["market_protection"] == "-1" and call.form["order_type"] == "MARKET"
    assert (order.broker, order.broker_order_id) == ("kite", kite.orders()[0]["order_id"])
    assert order.status == state.PUT_ORDER_REQ_RECEIVED  # Kite's answer is its id; its rows say the rest

    poll(order)
    assert (order.status, order.filled_quantity, order.average_price) == (state.COMPLETE, 10, D("1500.05"))
    assert Position.objects.get(strategy=live).quantity == 10


def test_inside_a_callers_transaction_the_order_is_sent_only_after_its_commit(kite, live, infy):
    with transaction.atomic():
        order = market_buy(infy).order
        assert kite.calls == [] and order.status == state.PUT_ORDER_REQ_RECEIVED
    assert len(kite.placements()) == 1
    order.refresh_from_db()
    assert order.broker_order_id == kite.orders()[0]["order_id"]


def test_a_slow_kite_holds_no_lock_other_orders_of_the_strategy_go_out_meanwhile(kite, live, infy, settings):
    settings.KITE_REQUEST_TIMEOUT = 30.0  # the first placement hangs until the test lets it go
    kite.fail_next("timeout", method="POST")
    price(infy.instrument_token, "1500.05")
    first: dict = {}

    def slow():
        try:
            first["result"] = place(infy, strategy="live-desk", key="slow", order_type="LIMIT", price="1500")
        finally:
            connection.close()

    thread = threading.Thread(target=slow)
    thread.start()
    wait_for(lambda: len(kite.placements()) == 1, what="the first placement at Kite")
    quick = place(infy, strategy="live-desk", key="quick", order_type="LIMIT", price="1499")
    assert quick.order.broker_order_id and thread.is_alive()  # placed while the first one still waits
    kite.release()
    thread.join(timeout=60)
    slow_order = first["result"].order
    slow_order.refresh_from_db()
    assert slow_order.status == state.PUT_ORDER_REQ_RECEIVED and not slow_order.broker_order_id
    [unknown] = events(slow_order, OrderEvent.Kind.BROKER_ERROR)
    assert unknown.message.startswith("unknown at broker") and "never sent twice" in unknown.message


# --- every outcome ---------------------------------------------------------------------------------


def test_an_expired_token_rejects_with_kite_login_needed_and_alerts_once_without_a_retry(kite, live, infy):
    kite.revoke(kite.access_token)  # the morning rollover
    order = market_buy(infy).order
    order.refresh_from_db()
    assert order.status == state.REJECTED and order.status_message.startswith("Kite login needed")
    assert len(kite.calls) == 1  # nothing retried with the dead token, no lookup
    [alert] = Alert.objects.filter(kind=Kind.KITE_LOGIN)
    assert f"LIVE order {order.pk}" in alert.body
    assert not Alert.objects.filter(kind=Kind.ORDER_REJECTED).exists()  # the login alert says it

    second = market_buy(infy).order
    second.refresh_from_db()
    assert second.status == state.REJECTED
    assert Alert.objects.filter(kind=Kind.KITE_LOGIN).count() == 1  # the same condition: counted, not resent


def test_kites_http_429_refuses_with_the_rate_rule_and_nothing_is_placed(kite, live, infy):
    kite.fail_next("429", method="POST")
    result = market_buy(infy)
    order = result.order
    assert result.refusal is not None and result.refusal.rule == "rate_limit"
    assert (order.status, order.risk_rule) == (state.REJECTED, "rate_limit")
    assert "HTTP 429" in order.status_message and kite.orders() == []
    assert not Alert.objects.filter(kind=Kind.ORDER_REJECTED).exists()


def test_kites_order_caps_refuse_before_sending(kite, live, infy, settings):
    settings.KITE_ORDERS_PER_MINUTE = 1
    market_buy(infy)
    refused = market_buy(infy)
    assert refused.refusal.rule == "rate_limit" and "Kite allows 1 orders a minute" in refused.refusal.detail
    assert len(kite.placements()) == 1


def test_a_kite_refusal_rejects_with_kites_message_and_alerts(kite, live, infy):
    kite.fail_next("margin", method="POST")
    order = market_buy(infy).order
    assert order.status == state.REJECTED and "Insufficient funds" in order.status_message
    assert order.risk_rule == "" and market_buy(infy).refusal is None
    [alert] = Alert.objects.filter(kind=Kind.ORDER_REJECTED)
    assert "Insufficient funds" in alert.body and f"LIVE order {order.pk}" in alert.subject


def test_a_strategy_without_a_kite_key_gets_a_clear_rejection(kite, live, infy, settings):
    settings.KITE_API_KEY = ""
    order = market_buy(infy).order
    assert order.status == state.REJECTED and "set KITE_API_KEY" in order.status_message
    assert kite.calls == []


# --- unknown at broker: never placed twice ------------------------------------------------------------


def test_a_placement_kite_never_got_stays_unknown_and_a_replay_sends_it_once(kite, live, infy):
    kite.fail_next("timeout", method="POST")
    order = market_buy(infy, key="k-1").order
    assert order.status == state.PUT_ORDER_REQ_RECEIVED and not order.broker_order_id
    assert events(order, OrderEvent.Kind.BROKER_ERROR)[0].message.startswith("unknown at broker")
    assert kite.orders() == [] and len(kite.calls_to("GET", "/orders")) == 1  # looked up by its tag

    again = market_buy(infy, key="k-1")  # the strategy retries with the same Idempotency-Key
    assert not again.created and again.order.pk == order.pk
    [placed] = kite.orders()
    assert again.order.broker_order_id == placed["order_id"] and placed["tag"] == f"TP{order.pk}"
    market_buy(infy, key="k-1")  # and once more: Kite has answered for it, nothing is sent
    assert (
        len(kite.placements()) == 2 and len(kite.orders()) == 1
    )  # the lost request and the one that arrived
    assert Order.objects.count() == 1


def test_a_placement_kite_took_while_its_book_could_not_be_read_is_found_by_its_tag_not_sent_again(
    kite, live, infy
):
    kite.fail_next("timeout", accept=True, method="POST")  # Kite places it; the answer is lost
    kite.fail_next("503", method="GET")  # and its order book cannot be read just then
    order = market_buy(infy, key="k-2").order
    assert order.status == state.PUT_ORDER_REQ_RECEIVED and not order.broker_order_id

    again = market_buy(infy, key="k-2").order
    [placed] = kite.orders()
    assert again.broker_order_id == placed["order_id"] and again.status == state.COMPLETE
    assert again.filled_quantity == 10 and Trade.objects.filter(order=again).count() == 1
    assert len(kite.placements()) == 1


def test_a_placement_kite_took_silently_is_found_by_its_tag_at_once(kite, live, infy):
    kite.fail_next("drop", accept=True, method="POST")
    order = market_buy(infy).order
    assert order.broker_order_id == kite.orders()[0]["order_id"] and order.status == state.COMPLETE
    assert len(kite.placements()) == 1


def test_a_replay_while_the_first_request_is_still_sending_sends_nothing(kite, live, infy, settings):
    settings.KITE_REQUEST_TIMEOUT = 30.0
    kite.fail_next("timeout", accept=True, method="POST")
    price(infy.instrument_token, "1500.05")
    first: dict = {}

    def sending():
        try:
            first["result"] = place(infy, strategy="live-desk", key="same-key")
        finally:
            connection.close()

    thread = threading.Thread(target=sending)
    thread.start()
    wait_for(lambda: len(kite.placements()) == 1, what="the first placement at Kite")
    replay = place(infy, strategy="live-desk", key="same-key")  # the client gave up waiting and retried
    assert not replay.created and replay.order.status == state.PUT_ORDER_REQ_RECEIVED
    assert len(kite.placements()) == 1 and kite.calls_to("GET") == []  # not even looked up: it is being sent
    with pytest.raises(OrderError, match="being sent to Kite right now") as busy:
        order_cancel(order_id=replay.order.pk, user=None)
    assert busy.value.status == 409
    kite.release()
    thread.join(timeout=60)
    order = Order.objects.get()
    assert order.broker_order_id == kite.orders()[0]["order_id"]  # found by its tag once the answer was lost
    assert len(kite.placements()) == 1


def test_an_unknown_order_kite_never_got_can_be_cancelled_here_and_is_never_sent(kite, live, infy):
    kite.fail_next("timeout", method="POST")
    order = market_buy(infy, key="k-3").order
    cancelled = order_cancel(order_id=order.pk, user=None)
    assert cancelled.status == state.CANCELLED and "not in Kite's order book" in cancelled.status_message
    market_buy(infy, key="k-3")  # a later replay finds it finished
    assert len(kite.placements()) == 1 and kite.orders() == []


def test_a_retry_after_the_kill_switch_engaged_is_not_sent(kite, live, infy):
    from oms.killswitch import kill_switch_set

    kite.fail_next("timeout", method="POST")
    order = market_buy(infy, key="k-4").order
    kill_switch_set(state="HALTED", by=None, reason="desk halted")
    again = market_buy(infy, key="k-4")
    assert again.refusal.rule == "kill_switch" and again.order.status == state.CANCELLED
    assert "not sent again: kill_switch" in again.order.status_message
    assert len(kite.placements()) == 1 and order.pk == again.order.pk


# --- modify and cancel -------------------------------------------------------------------------------


def limit_buy(infy, **fields):
    price(infy.instrument_token, "1500.05")
    order = place(infy, strategy="live-desk", order_type="LIMIT", price="1490", **fields).order
    assert order.broker_order_id
    return order


def test_a_kite_cancel_answers_cancel_pending_until_kites_row_says_cancelled(kite, live, infy):
    order = limit_buy(infy)
    cancelled = order_cancel(order_id=order.pk, user=None)
    assert cancelled.status == state.CANCEL_PENDING
    assert kite.calls_to("DELETE")[0].path == f"/orders/regular/{order.broker_order_id}"
    poll(order)
    assert (order.status, order.cancelled_quantity) == (state.CANCELLED, 10)


@pytest.mark.parametrize("kind", ["timeout", "503"])
def test_a_cancel_kite_does_not_answer_is_outcome_unknown_not_a_500(kite, live, infy, kind):
    order = limit_buy(infy)
    kite.fail_next(kind, method="DELETE", accept=True)  # carried out at Kite; the answer lost
    with pytest.raises(OutcomeUnknown, match="cancel outcome unknown") as unknown:
        order_cancel(order_id=order.pk, user=None)
    assert unknown.value.status == 503
    order.refresh_from_db()
    assert order.status == state.PUT_ORDER_REQ_RECEIVED  # as it was: Kite's next row says
    assert events(order, OrderEvent.Kind.BROKER_ERROR)[0].message.startswith("cancel outcome unknown")
    poll(order)
    assert order.status == state.CANCELLED


def test_a_modify_kite_does_not_answer_is_outcome_unknown_and_its_next_row_tells(kite, live, infy):
    order = limit_buy(infy)
    kite.fail_next("timeout", method="PUT", accept=True)
    with pytest.raises(OutcomeUnknown, match="modify outcome unknown"):
        order_modify(order_id=order.pk, user=None, price=D("1491"))
    order.refresh_from_db()
    assert order.price == D("1490")
    poll(order)
    assert (order.price, order.status) == (D("1491"), state.OPEN)


def test_a_modify_goes_to_kite_and_its_values_stay(kite, live, infy):
    order = limit_buy(infy)
    modified = order_modify(order_id=order.pk, user=None, quantity=15, price=D("1489.95"))
    assert (modified.quantity, modified.price) == (15, D("1489.9500"))
    [call] = kite.calls_to("PUT")
    assert (call.form["quantity"], call.form["price"]) == ("15", "1489.95")
    poll(order)
    assert (order.quantity, order.price, order.pending_quantity) == (15, D("1489.95"), 15)


def test_modify_and_cancel_refused_for_the_token_alert_the_desk(kite, live, infy):
    order = limit_buy(infy)
    kite.revoke(kite.access_token)
    with pytest.raises(OrderError, match="Kite login needed"):
        order_cancel(order_id=order.pk, user=None)
    assert (
        events(order, OrderEvent.Kind.CANCEL_REFUSED) and Alert.objects.filter(kind=Kind.KITE_LOGIN).exists()
    )


def test_a_cancel_over_kites_rate_is_a_429(kite, live, infy):
    order = limit_buy(infy)
    kite.fail_next("429", method="DELETE")
    with pytest.raises(RateLimited):
        order_cancel(order_id=order.pk, user=None)


# --- freeze quantities -----------------------------------------------------------------------------


def option_buy(nifty_ce, quantity, *, strategy):
    price(nifty_ce.instrument_token, "12.30")
    return place(nifty_ce, strategy=strategy, quantity=quantity, product="NRML")


def test_above_the_freeze_quantity_a_paper_order_is_refused_with_the_limit_named(manual, nifty_ce, kite):
    result = option_buy(nifty_ce, 1875, strategy="manual")
    assert result.refusal.rule == "freeze_quantity" and result.order.status == state.RISK_REJECTED
    assert "above the exchange's freeze quantity 1800 for NFO:NIFTY" in result.refusal.detail
    assert option_buy(nifty_ce, 1800, strategy="manual").refusal is None
    assert kite.calls == []


def test_above_the_freeze_quantity_a_live_order_is_refused_before_kite_sees_it(kite, live, nifty_ce):
    result = option_buy(nifty_ce, 3000, strategy="live-desk")
    assert result.refusal.rule == "freeze_quantity" and kite.calls == []


def test_with_autoslice_allowed_kite_slices_it_and_the_slices_fills_make_one_order(kite, live, nifty_ce):
    Strategy.objects.filter(pk=live.pk).update(allow_autoslice=True)
    kite.freeze[f"NFO:{nifty_ce.tradingsymbol}"] = 1800
    kite.prices[f"NFO:{nifty_ce.tradingsymbol}"] = D("12.30")
    order = option_buy(nifty_ce, 4500, strategy="live-desk").order
    [call] = kite.placements()
    assert call.form["autoslice"] == "true" and call.form["quantity"] == "4500"
    assert [row["quantity"] for row in kite.orders()] == [1800, 1800, 900]
    assert order.broker_order_id not in {row["order_id"] for row in kite.orders()}  # the parent's id

    poll(order)
    assert (order.status, order.filled_quantity, order.average_price) == (state.COMPLETE, 4500, D("12.30"))
    assert Trade.objects.filter(order=order).count() == 3 and Order.objects.count() == 1
    assert Position.objects.get(strategy=live).quantity == 4500


def test_a_modify_above_the_freeze_quantity_is_refused_even_with_autoslice(kite, live, nifty_ce):
    Strategy.objects.filter(pk=live.pk).update(allow_autoslice=True)
    price(nifty_ce.instrument_token, "12.30")
    order = place(nifty_ce, strategy="live-desk", quantity=1500, product="NRML", order_type="LIMIT",
                  price="12").order  # fmt: skip
    with pytest.raises(OrderError, match="freeze_quantity: .*a modification cannot be sliced"):
        order_modify(order_id=order.pk, user=None, quantity=1875)
    assert kite.calls_to("PUT") == []


def test_a_square_off_above_the_freeze_quantity_goes_out_sliced(kite, live, nifty_ce):
    from oms.killswitch import position_square_off

    Strategy.objects.filter(pk=live.pk).update(allow_autoslice=True)
    kite.freeze[f"NFO:{nifty_ce.tradingsymbol}"] = 1800
    poll(option_buy(nifty_ce, 3600, strategy="live-desk").order)
    Strategy.objects.filter(pk=live.pk).update(allow_autoslice=False)  # flattening is never stopped by it
    position = Position.objects.get(strategy=live)
    order = position_square_off(position=position, source="kill_switch", key="flatten")
    assert order.risk_rule == "" and order.broker_order_id
    assert kite.placements()[-1].form["autoslice"] == "true"
    poll(order)
    position.refresh_from_db()
    assert (order.status, position.quantity) == (state.COMPLETE, 0)


def test_a_lookup_refused_after_a_timeout_leaves_the_order_unknown_not_rejected(kite, live, infy):
    kite.fail_next("timeout", accept=True, method="POST")  # Kite has it
    kite.fail_next("token", method="GET")  # and the lookup by tag is refused
    order = market_buy(infy, key="k-5").order
    assert order.status == state.PUT_ORDER_REQ_RECEIVED  # never REJECTED: that would refuse its fills
    assert events(order, OrderEvent.Kind.BROKER_ERROR)[0].message.startswith("unknown at broker")
    new_token(kite)  # a refused token is not used again: the desk logs in again
    again = market_buy(infy, key="k-5").order
    assert again.status == state.COMPLETE and len(kite.placements()) == 1


def test_a_kill_switch_square_off_kite_never_got_is_retried_once_after_a_while(kite, live, infy):
    from datetime import timedelta

    from django.utils import timezone

    from oms.killswitch import SQUARE_OFF_RETRY_SECONDS, kill_switch_set, square_off_standing

    poll(market_buy(infy).order)
    kite.fail_next("timeout", method="POST")
    event = kill_switch_set(state="HALTED", by=None, reason="flatten", square_off=True)
    square_off = Order.objects.get(source="kill_switch")
    assert event.result["square_off_orders"] == 1 and square_off.status == state.PUT_ORDER_REQ_RECEIVED
    square_off_standing()  # a monitor pass at once: it is on its way, nothing sent
    assert len(kite.placements()) == 2 and Order.objects.filter(source="kill_switch").count() == 1

    earlier = timezone.now() - timedelta(seconds=SQUARE_OFF_RETRY_SECONDS + 1)
    OrderEvent.objects.filter(order=square_off).update(at=earlier)  # the clock moves on
    square_off_standing()
    square_off.refresh_from_db()
    assert square_off.broker_order_id and len(kite.placements()) == 3 and len(kite.orders()) == 2
    assert kite.placements()[-1].form["tag"] == f"TP{square_off.pk}"
    square_off_standing()  # Kite has answered for it: never sent again
    assert len(kite.placements()) == 3
    poll(square_off)
    assert Position.objects.get(strategy=live).quantity == 0
