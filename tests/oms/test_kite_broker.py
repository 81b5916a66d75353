"""The Kite broker against a fake Kite REST server (tests/fakes/kite_rest.py), reached through
KITE_API_URL as the real one is: what is sent, how every failure maps to an outcome, the
placement whose answer is lost and is never placed twice, Kite's rate caps, the token read
per call, and Kite's rows as the OMS's own (Decimal, aware IST)."""

import itertools
import multiprocessing
from datetime import datetime
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_errors

from oms import state
from oms.brokers.base import BrokerRejected, BrokerUnavailable
from oms.brokers.kite import (
    BrokerLoginNeeded,
    BrokerRateLimited,
    KiteBroker,
    KiteOrderRate,
    fills_from_kite_trades,
    kite_decimal,
    kite_order_rate_reset,
    order_id_from_tag,
    order_tag,
    update_from_autoslice,
    update_from_kite_order,
)
from oms.models import Order, Position, Strategy, Trade
from oms.updates import order_update
from tests.factories import InstrumentFactory, NiftyOptionFactory
from tests.fakes.kite_rest import FakeKite
from tests.oms.live_fixtures import new_token

pytestmark = pytest.mark.django_db
IST = ZoneInfo("Asia/Kolkata")
_keys = itertools.count(1)


@pytest.fixture
def kite(settings, tmp_path):
    """A fake Kite, and the portal configured for it (the token in a file, as the morning job writes it)."""
    with FakeKite() as fake:
        token_file = tmp_path / "kite-access-token"
        token_file.write_text(fake.access_token + "\n")
        settings.KITE_API_URL = fake.url
        settings.KITE_API_KEY = fake.api_key
        settings.KITE_ACCESS_TOKEN = ""
        settings.KITE_ACCESS_TOKEN_FILE = str(token_file)
        settings.KITE_REQUEST_TIMEOUT = 5.0
        fake.token_file = token_file
        kite_order_rate_reset()
        yield fake
        kite_order_rate_reset()


@pytest.fixture
def live(db):
    return Strategy.objects.create(name="live-desk", mode="LIVE", capital=D("1000000"))


@pytest.fixture
def infy(db):
    return InstrumentFactory(
        tradingsymbol="INFY", instrument_token=408065, exchange="NSE", tick_size=D("0.05")
    )


def live_order(strategy, instrument, *, quantity=10, order_type="LIMIT", price="1500.05", trigger="0", side="BUY",
               product="MIS", **fields):  # fmt: skip
    now = timezone.now()
    return Order.objects.create(
        strategy=strategy, instrument=instrument, exchange=instrument.exchange, tradingsymbol=instrument.tradingsymbol,
        instrument_token=instrument.instrument_token, transaction_type=side, quantity=quantity, product=product,
        order_type=order_type, price=D(price), trigger_price=D(trigger), broker="kite",
        idempotency_key=f"kite-{next(_keys)}", pending_quantity=quantity, placed_at=now, updated_at=now, **fields,
    )  # fmt: skip


def apply(order, update, source="poll"):
    result = order_update(order_id=order.pk, update=update, source=source, broker="kite")
    order.refresh_from_db()
    return result


# --- what is sent ------------------------------------------------------------------------------------


def test_a_limit_order_goes_out_with_kites_fields_our_tag_and_the_token_in_the_header(kite, live, infy):
    order = live_order(live, infy, price="1500.05")
    update = KiteBroker().place(order)

    [call] = kite.placements()
    assert call.path == "/orders/regular"
    assert call.form == {"variety": "regular", "exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY",
                         "quantity": "10", "product": "MIS", "order_type": "LIMIT", "validity": "DAY",
                         "price": "1500.05", "tag": f"TP{order.pk}"}  # fmt: skip
    assert call.headers["authorization"] == f"token {kite.api_key}:{kite.access_token}"
    assert call.headers["x-kite-version"] == "3"
    assert update.broker_order_id == kite.orders()[0]["order_id"]
    assert kite.order(update.broker_order_id)["tag"] == order_tag(order.pk)


def test_the_strategys_algo_id_is_sent_when_it_has_one(kite, live, infy):
    KiteBroker().place(live_order(live, infy))
    live.algo_id = "NSE-ALGO-4711"  # the field the lead adds to Strategy
    KiteBroker().place(live_order(live, infy))
    first, second = kite.placements()
    assert "algo_id" not in first.form
    assert second.form["algo_id"] == "NSE-ALGO-4711"


@pytest.mark.parametrize(
    ("order_type", "price", "trigger", "protected"),
    [("MARKET", "0", "0", True), ("SL-M", "0", "1490", True), ("LIMIT", "1500", "0", False),
     ("SL", "1485", "1490", False)],
)  # fmt: skip
def test_market_and_sl_m_orders_carry_market_protection_default_automatic(kite, live, infy, order_type, price,
                                                                           trigger, protected):  # fmt: skip
    KiteBroker().place(
        live_order(live, infy, order_type=order_type, price=price, trigger=trigger, side="SELL")
    )
    [call] = kite.placements()
    assert call.form.get("market_protection") == ("-1" if protected else None)
    assert ("price" in call.form) == (order_type in ("LIMIT", "SL"))
    assert call.form.get("trigger_price") == (trigger if order_type in ("SL", "SL-M") else None)


def test_a_strategys_own_market_protection_is_sent_and_a_meaningless_one_refused_before_sending(
    kite, live, infy
):
    live.market_protection = D("2.5")
    KiteBroker().place(live_order(live, infy, order_type="MARKET", price="0"))
    assert kite.placements()[0].form["market_protection"] == "2.5"

    live.market_protection = D(0)  # no protection: Kite refuses such orders
    with pytest.raises(BrokerRejected, match="market_protection 0"):
        KiteBroker().place(live_order(live, infy, order_type="MARKET", price="0"))
    assert len(kite.placements()) == 1


def test_ttl_validity_sends_its_minutes(kite, live, infy):
    KiteBroker().place(live_order(live, infy, validity="TTL", validity_ttl=3))
    form = kite.placements()[0].form
    assert (form["validity"], form["validity_ttl"]) == ("TTL", "3")


def test_cover_and_iceberg_orders_are_refused_without_a_request(kite, live, infy):
    with pytest.raises(BrokerRejected, match="iceberg orders are not supported"):
        KiteBroker().place(live_order(live, infy, variety="iceberg"))
    assert kite.calls == []


@given(st.integers(min_value=1, max_value=10**18 - 1))
def test_the_tag_names_our_order_in_at_most_20_characters(order_id):
    tag = order_tag(order_id)
    assert len(tag) <= 20 and order_id_from_tag(tag) == order_id


def test_tags_that_are_not_ours_name_no_order():
    assert [order_id_from_tag(t) for t in (None, "", "TP", "TPx1", "icebergord", "autoslice:12", "TP٣")] == [
        None
    ] * 7


# --- autoslice above the freeze quantity --------------------------------------------------------------


@pytest.fixture
def nifty_option(db):
    return NiftyOptionFactory(
        tradingsymbol="NIFTY99DEC24000CE", instrument_token=10189826, tick_size=D("0.05")
    )


def test_above_the_freeze_quantity_an_order_is_refused_unless_the_strategy_allows_autoslice(
    kite, live, nifty_option
):
    order = live_order(live, nifty_option, quantity=4000, order_type="MARKET", price="0", product="NRML")
    with pytest.raises(
        BrokerRejected, match="above the exchange's freeze quantity 1800 for NFO:NIFTY99DEC24000CE"
    ):
        KiteBroker().place(order, freeze_quantity=1800)
    assert kite.calls == []


def test_an_autosliced_order_is_one_order_whose_slices_fills_aggregate(kite, live, nifty_option):
    kite.freeze["NFO:NIFTY99DEC24000CE"] = 1800
    kite.prices["NFO:NIFTY99DEC24000CE"] = D("12.30")
    live.allow_autoslice = True
    order = live_order(live, nifty_option, quantity=4000, order_type="MARKET", price="0", product="NRML")

    update = KiteBroker().place(order, freeze_quantity=1800)
    [call] = kite.placements()
    assert call.form["autoslice"] == "true" and call.form["quantity"] == "4000"
    assert [row["quantity"] for row in kite.orders()] == [1800, 1800, 400]
    apply(order, update, source="api")
    assert order.broker_order_id == update.broker_order_id

    found = KiteBroker().find(order)  # the slices filled at once (MARKET)
    assert found.status == state.COMPLETE and sum(f.quantity for f in found.fills) == 4000
    apply(order, found)
    assert (order.status, order.filled_quantity, order.average_price) == (state.COMPLETE, 4000, D("12.30"))
    assert Trade.objects.filter(order=order).count() == 3


def test_slices_kite_refuses_leave_the_order_cancelled_with_what_filled(kite, live, nifty_option):
    kite.freeze["NFO:NIFTY99DEC24000CE"] = 1800
    kite.refuse_slices = {1}
    live.allow_autoslice = True
    order = live_order(live, nifty_option, quantity=4000, order_type="MARKET", price="0", product="NRML")

    update = KiteBroker().place(order, freeze_quantity=1800)
    assert "1 of 3 slices refused by Kite: Insufficient funds" in update.status_message
    apply(order, update, source="api")
    apply(order, KiteBroker().find(order))
    assert (order.status, order.filled_quantity, order.cancelled_quantity) == (state.CANCELLED, 2200, 1800)


def test_an_order_whose_every_slice_kite_refuses_is_rejected(kite, live, nifty_option):
    kite.freeze["NFO:NIFTY99DEC24000CE"] = 1800
    kite.refuse_slices = {0, 1, 2}
    live.allow_autoslice = True
    order = live_order(live, nifty_option, quantity=4000, order_type="MARKET", price="0", product="NRML")
    with pytest.raises(BrokerRejected, match="Kite refused every slice of the order: Insufficient funds"):
        KiteBroker().place(order, freeze_quantity=1800)


def test_cancelling_an_autosliced_order_cancels_its_working_slices(kite, live, nifty_option):
    kite.freeze["NFO:NIFTY99DEC24000CE"] = 1800
    live.allow_autoslice = True
    order = live_order(live, nifty_option, quantity=3000, price="12.05", product="NRML")
    apply(order, KiteBroker().place(order, freeze_quantity=1800), source="api")
    first = kite.orders()[0]["order_id"]
    kite.fill(first)  # one slice trades before the cancel

    assert KiteBroker().cancel(order).status == state.CANCEL_PENDING
    assert [row["status"] for row in kite.orders()] == ["COMPLETE", "CANCELLED"]
    apply(order, KiteBroker().find(order))
    assert (order.status, order.filled_quantity) == (state.CANCELLED, 1800)
    with pytest.raises(BrokerRejected, match="nothing to cancel"):
        KiteBroker().cancel(order)


# --- modify and cancel ------------------------------------------------------------------------------------


def test_modify_sends_the_new_values_and_kites_next_row_confirms_them(kite, live, infy):
    order = live_order(live, infy, price="1500.05")
    apply(order, KiteBroker().place(order), source="api")

    update = KiteBroker().modify(order, quantity=15, price=D("1499.95"), trigger_price=None)
    [call] = kite.calls_to("PUT")
    assert call.path == f"/orders/regular/{order.broker_order_id}"
    assert (call.form["quantity"], call.form["price"], call.form["order_type"]) == ("15", "1499.95", "LIMIT")
    assert (update.quantity, update.price) == (15, D("1499.95"))
    apply(order, update, source="api")
    row = KiteBroker().find(order)
    assert (row.status, row.quantity, row.price) == (state.OPEN, 15, D("1499.95"))


def test_modify_of_a_filled_order_is_refused_with_kites_message(kite, live, infy):
    order = live_order(live, infy)
    apply(order, KiteBroker().place(order), source="api")
    kite.fill(order.broker_order_id)
    with pytest.raises(BrokerRejected, match="Order cannot be modified as it is complete"):
        KiteBroker().modify(order, quantity=None, price=D("1501"), trigger_price=None)


def test_cancel_is_pending_until_kites_row_says_cancelled(kite, live, infy):
    order = live_order(live, infy)
    apply(order, KiteBroker().place(order), source="api")
    update = KiteBroker().cancel(order)
    assert kite.calls_to("DELETE")[0].path == f"/orders/regular/{order.broker_order_id}"
    apply(order, update, source="api")
    assert order.status == state.CANCEL_PENDING
    apply(order, KiteBroker().find(order))
    assert (order.status, order.cancelled_quantity) == (state.CANCELLED, 10)


def test_cancel_of_a_filled_order_is_refused_with_kites_message(kite, live, infy):
    order = live_order(live, infy)
    apply(order, KiteBroker().place(order), source="api")
    kite.fill(order.broker_order_id)
    with pytest.raises(BrokerRejected, match="Order cannot be cancelled as it is complete"):
        KiteBroker().cancel(order)


def test_an_order_whose_answer_was_lost_is_cancelled_by_its_tag(kite, live, infy):
    order = live_order(live, infy)
    kite.fail_next("drop", accept=True, method="POST")
    KiteBroker().place(order)  # found by tag, but the caller never stored it
    assert order.broker_order_id is None
    KiteBroker().cancel(order)
    assert kite.orders()[0]["status"] == "CANCELLED"


# --- every error, mapped ------------------------------------------------------------------------------------


def test_an_expired_token_is_login_needed_and_nothing_is_retried_with_it(kite, live, infy):
    kite.revoke(kite.access_token)  # the morning rollover
    with pytest.raises(BrokerLoginNeeded, match="Kite login needed: Incorrect `api_key` or `access_token`"):
        KiteBroker().place(live_order(live, infy))
    assert len(kite.calls) == 1  # no lookup, no second attempt with the dead token


def test_no_token_at_all_is_login_needed_without_a_request(kite, live, infy):
    kite.token_file.write_text("")
    with pytest.raises(BrokerLoginNeeded, match="no access token"):
        KiteBroker().place(live_order(live, infy))
    assert kite.calls == []


def test_http_429_is_rate_limited_and_not_placed(kite, live, infy):
    kite.fail_next("429", method="POST")
    with pytest.raises(BrokerRateLimited, match="HTTP 429"):
        KiteBroker().place(live_order(live, infy))
    assert len(kite.placements()) == 1 and kite.orders() == []


@pytest.mark.parametrize(
    ("kind", "message"),
    [("input", "Invalid `price`"), ("order", "ban period"), ("margin", "Insufficient funds"),
     ("general", "Something went wrong"), ("permission", "Insufficient permission"), ("500", "Internal server error")],
)  # fmt: skip
def test_kites_refusals_are_rejections_with_kites_message(kite, live, infy, kind, message):
    kite.fail_next(kind, method="POST")
    with pytest.raises(BrokerRejected, match=message) as refused:
        KiteBroker().place(live_order(live, infy))
    assert type(refused.value) is BrokerRejected
    assert kite.calls_to("GET") == []  # a refusal is an answer: nothing to look up


def test_a_real_refusal_by_kites_validation_is_a_rejection(kite, live, infy):
    with pytest.raises(BrokerRejected, match="Invalid `price`"):
        KiteBroker().place(live_order(live, infy, price="0"))


@pytest.mark.parametrize("kind", ["timeout", "drop", "502", "503", "html"])
def test_a_placement_kite_carried_out_without_telling_us_is_found_by_its_tag(
    kite, live, infy, settings, kind
):
    settings.KITE_REQUEST_TIMEOUT = 2.0
    order = live_order(live, infy)
    kite.fail_next(kind, accept=True, method="POST")

    update = KiteBroker().place(order)
    [placed] = kite.orders()
    assert update.broker_order_id == placed["order_id"] and update.status == state.OPEN
    assert len(kite.placements()) == 1
    apply(order, update, source="api")
    assert (order.broker_order_id, order.status) == (placed["order_id"], state.OPEN)

    KiteBroker().place(order, retry=True)  # a retry, even a careless one, never places it twice
    assert len(kite.placements()) == 1 and len(kite.orders()) == 1


@pytest.mark.parametrize("kind", ["timeout", "drop", "503", "html"])
def test_a_placement_kite_never_got_is_unknown_then_sent_once_by_a_retry(kite, live, infy, settings, kind):
    settings.KITE_REQUEST_TIMEOUT = 2.0
    order = live_order(live, infy)
    kite.fail_next(kind, method="POST")
    with pytest.raises(BrokerUnavailable):
        KiteBroker().place(order)
    assert kite.orders() == [] and len(kite.calls_to("GET", "/orders")) == 1  # looked up by tag

    update = KiteBroker().place(order, retry=True)
    assert len(kite.orders()) == 1 and update.broker_order_id == kite.orders()[0]["order_id"]
    assert len(kite.placements()) == 2  # the lost request and the one that arrived


def test_when_the_order_book_cannot_be_read_either_the_outcome_stays_unknown(kite, live, infy, settings):
    settings.KITE_REQUEST_TIMEOUT = 2.0
    order = live_order(live, infy)
    kite.fail_next("timeout", accept=True, method="POST")
    kite.fail_next("503", method="GET")
    with pytest.raises(BrokerUnavailable, match="did not answer within 2 s"):
        KiteBroker().place(order)
    with pytest.raises(BrokerUnavailable):  # the retry cannot know either: it sends nothing
        kite.fail_next("503", method="GET")
        KiteBroker().place(order, retry=True)
    assert len(kite.placements()) == 1
    assert KiteBroker().place(order, retry=True).broker_order_id == kite.orders()[0]["order_id"]
    assert len(kite.placements()) == 1


def test_an_order_kite_answered_for_is_never_sent_again(kite, live, infy):
    order = live_order(live, infy)
    apply(order, KiteBroker().place(order), source="api")
    again = KiteBroker().place(order)
    assert again.broker_order_id == order.broker_order_id and len(kite.placements()) == 1


def test_no_secret_reaches_a_log_line_an_exception_or_a_payload(kite, live, infy, settings, caplog):
    settings.KITE_REQUEST_TIMEOUT = 2.0
    order = live_order(live, infy)
    kite.fail_next("timeout", accept=True, method="POST")
    found = KiteBroker().place(order)
    kite.fail_next("token", method="POST")
    with pytest.raises(BrokerLoginNeeded) as refused:
        KiteBroker().place(live_order(live, infy))
    new_token(kite)  # a refused token is not used again: the desk logs in again
    kite.fail_next("drop", method="POST")
    with pytest.raises(BrokerUnavailable) as unknown:
        KiteBroker().place(live_order(live, infy))
    text = " ".join([caplog.text, str(refused.value), str(unknown.value), repr(found.payload)])
    assert "order" in caplog.text and kite.access_token not in text and "kite-test-token-2" not in text


# --- Kite's rate caps, before sending ---------------------------------------------------------------------


def test_orders_over_kites_per_minute_cap_are_refused_before_sending(kite, live, infy, settings):
    settings.KITE_ORDERS_PER_MINUTE = 2
    KiteBroker().place(live_order(live, infy))
    KiteBroker().place(live_order(live, infy))
    with pytest.raises(BrokerRateLimited, match="Kite allows 2 orders a minute per API key"):
        KiteBroker().place(live_order(live, infy))
    assert len(kite.placements()) == 2


def test_the_day_cap_refuses_before_sending(kite, live, infy, settings):
    settings.KITE_ORDERS_PER_DAY = 2
    KiteBroker().place(live_order(live, infy))
    KiteBroker().place(live_order(live, infy))
    with pytest.raises(BrokerRateLimited, match="Kite allows 2 orders a day per API key"):
        KiteBroker().place(live_order(live, infy))
    assert len(kite.placements()) == 2


def test_orders_refused_for_the_rate_do_not_use_up_the_caps(settings):
    settings.KITE_ORDERS_PER_SECOND, settings.KITE_ORDERS_PER_DAY = 2, 4
    rate = KiteOrderRate("a-key")
    rate.reset()
    start = 1_750_000_000.0  # 2025-06-15 20:36:40 IST
    rate.admit(now=start)
    rate.admit(now=start + 0.1)
    for _ in range(3):
        with pytest.raises(BrokerRateLimited, match="2 orders a second"):
            rate.admit(now=start + 0.2)
    rate.admit(now=start + 2)
    rate.admit(now=start + 2.1)  # the fourth sent today: the three refused were never counted
    with pytest.raises(BrokerRateLimited, match="4 orders a day"):
        rate.admit(now=start + 4)
    rate.reset()


def test_the_per_second_cap_is_a_sliding_second(settings):
    settings.KITE_ORDERS_PER_SECOND = 10
    rate = KiteOrderRate("a-key")
    rate.reset()
    start = 1_750_000_000.0
    for n in range(10):
        rate.admit(now=start + n * 0.05)
    with pytest.raises(BrokerRateLimited, match="10 orders a second"):
        rate.admit(now=start + 0.99)
    rate.admit(now=start + 1.001)  # the first one has left the window
    with pytest.raises(
        BrokerRateLimited, match="these 12 orders would exceed"
    ):  # more slices than a second allows
        rate.admit(orders=12, now=start + 30)
    rate.reset()


def _admit_in_child(api_key, orders):
    from oms.brokers.kite import KiteOrderRate

    KiteOrderRate(api_key).admit(orders=orders)


def test_the_counts_are_shared_by_processes(settings):
    settings.KITE_ORDERS_PER_MINUTE = 5
    rate = KiteOrderRate("shared-key")
    rate.reset()
    child = multiprocessing.get_context("fork").Process(target=_admit_in_child, args=("shared-key", 4))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    rate.admit()
    with pytest.raises(BrokerRateLimited, match="5 orders a minute"):
        rate.admit()
    rate.reset()


def test_when_the_counts_cannot_be_read_nothing_is_sent(kite, live, infy, settings):
    from tests.helpers import free_port

    order = live_order(live, infy)
    working = settings.CACHES
    # A Redis nobody listens on.
    settings.CACHES = {**working, "default": {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient", "SOCKET_CONNECT_TIMEOUT": 1}}}  # fmt: skip
    try:
        with pytest.raises(BrokerRateLimited, match="cannot be counted"):
            KiteBroker().place(order)
    finally:
        settings.CACHES = working
    assert kite.placements() == []


# --- the token, read on every call ----------------------------------------------------------------------------


def test_a_new_token_written_to_the_file_is_used_by_the_next_call_without_a_restart(kite, live, infy):
    broker = KiteBroker()
    broker.place(live_order(live, infy))
    # The morning login: a new session (checksum = sha256(api_key + request_token + api_secret)).
    session = KiteConnect(kite.api_key, root=kite.url).generate_session(
        kite.issue_request_token(), kite.api_secret
    )
    kite.revoke(kite.access_token)
    kite.token_file.write_text(session["access_token"])

    broker.place(live_order(live, infy))
    first, second = kite.placements()
    assert first.headers["authorization"].endswith(f":{kite.access_token}")
    assert second.headers["authorization"] == f"token {kite.api_key}:{session['access_token']}"


def test_the_fake_checks_the_session_checksum_and_forgets_a_logged_out_token(kite):
    client = KiteConnect(kite.api_key, root=kite.url)
    with pytest.raises(kite_errors.TokenException, match="checksum"):
        client.generate_session(kite.issue_request_token(), "not-the-secret")
    session = client.generate_session(kite.issue_request_token(), kite.api_secret)
    assert client.orders() == []
    assert client.invalidate_access_token() is True
    with pytest.raises(kite_errors.TokenException):
        KiteConnect(kite.api_key, access_token=session["access_token"], root=kite.url).orders()


def test_the_fake_insists_on_kites_version_header(kite):
    import requests

    answer = requests.get(f"{kite.url}/orders", headers={"Authorization": f"token {kite.api_key}:{kite.access_token}"},
                          timeout=5)  # fmt: skip
    assert answer.status_code == 400 and answer.json()["error_type"] == "InputException"


# --- Decimal end to end ---------------------------------------------------------------------------------------


def test_a_price_a_float_would_mangle_arrives_exact(kite, live, infy):
    order = live_order(live, infy, price="109.35")
    apply(order, KiteBroker().place(order), source="api")
    kite.fill(order.broker_order_id, price=D("109.35000000000001"))  # the JSON text Kite's float gives
    assert D(109.35000000000001) != D("109.35")  # what Decimal(float) would have stored

    [trade] = KiteBroker().trades()
    assert trade["average_price"] == D("109.35000000000001")  # Kite's row: exactly the number Kite wrote
    found = KiteBroker().find(order)
    [fill] = found.fills
    assert fill.price == D("109.35") and str(fill.price) == "109.35"  # the fill: at the instrument's places
    apply(order, found)
    assert Trade.objects.get(order=order).price == D("109.35")
    assert Position.objects.get(strategy=live).average_price == D("109.35")


def test_the_books_come_back_in_decimals_and_aware_ist_times(kite, live, infy):
    order = live_order(live, infy, price="1500.05")
    apply(order, KiteBroker().place(order), source="api")
    kite.fill(order.broker_order_id, quantity=4)
    broker = KiteBroker()
    [row], [trade], [position] = broker.orders(), broker.trades(), broker.positions()
    assert row["price"] == D("1500.05") and isinstance(row["average_price"], D)
    assert (
        row["order_timestamp"].tzinfo is not None
        and row["order_timestamp"].utcoffset().total_seconds() == 19800
    )
    assert trade["average_price"] == D("1500.05") and trade["fill_timestamp"].tzinfo is not None
    assert (position["quantity"], position["average_price"]) == (4, D("1500.05"))


def test_a_partly_filled_order_converges_through_the_update_service(kite, live, infy):
    order = live_order(live, infy, quantity=10, price="1500.05")
    apply(order, KiteBroker().place(order), source="api")
    kite.fill(order.broker_order_id, quantity=4)
    apply(order, KiteBroker().find(order))
    assert (order.status, order.filled_quantity) == (state.OPEN, 4)
    kite.fill(order.broker_order_id, price="1499.95")
    found = KiteBroker().find(order)
    apply(order, found)
    apply(order, found)  # a second poll of the same rows changes nothing
    assert (order.status, order.filled_quantity, order.average_price) == (state.COMPLETE, 10, D("1499.99"))
    assert Trade.objects.filter(order=order).count() == 2


# --- the row converters (pure) ----------------------------------------------------------------------------------

# Rows as Kite documents them (zerodha/kiteconnect-mocks orders.json, order_info.json, trades.json).
CANCELLED_ROW = {
    "placed_by": "XXXXXX", "order_id": "100000000000000", "exchange_order_id": "200000000000000",
    "parent_order_id": None, "status": "CANCELLED", "status_message": None, "order_timestamp": "2021-05-31 09:18:57",
    "exchange_update_timestamp": "2021-05-31 09:18:58", "exchange_timestamp": "2021-05-31 09:15:38",
    "variety": "regular", "modified": False, "exchange": "CDS", "tradingsymbol": "USDINR21JUNFUT",
    "instrument_token": 412675, "order_type": "LIMIT", "transaction_type": "BUY", "validity": "DAY", "product": "NRML",
    "quantity": 1, "price": 72, "trigger_price": 0, "average_price": 0, "filled_quantity": 0, "pending_quantity": 1,
    "cancelled_quantity": 1, "market_protection": 0, "meta": {}, "tag": None, "guid": "XXXXX",
}  # fmt: skip
REJECTED_ROW = {
    **CANCELLED_ROW, "order_id": "220524001859672", "exchange_order_id": None, "status": "REJECTED",
    "status_message": "Insufficient funds. Required margin is 95417.84 but available margin is 74251.80.",
    "order_timestamp": "2022-05-24 12:26:52", "exchange_update_timestamp": None, "exchange_timestamp": None,
}  # fmt: skip


def test_an_order_book_row_is_an_update_with_kites_status_ids_and_sequence():
    update = update_from_kite_order(CANCELLED_ROW)
    assert (update.status, update.broker_order_id, update.exchange_order_id) == (
        state.CANCELLED, "100000000000000", "200000000000000")  # fmt: skip
    assert update.status_message == "" and update.quantity is None and update.price is None
    assert update.sequence == int(datetime(2021, 5, 31, 9, 18, 58, tzinfo=IST).timestamp() * 1000)

    rejected = update_from_kite_order(REJECTED_ROW)  # no exchange times: the order's own
    assert rejected.status_message.startswith("Insufficient funds") and rejected.exchange_order_id == ""
    assert rejected.sequence == int(datetime(2022, 5, 24, 12, 26, 52, tzinfo=IST).timestamp() * 1000)


def test_a_modified_rows_values_come_with_its_update_in_decimals():
    row = {
        **CANCELLED_ROW,
        "status": "OPEN",
        "modified": True,
        "quantity": 3,
        "price": 72.7525,
        "order_type": "LIMIT",
    }
    update = update_from_kite_order(row, tick_size=D("0.0025"))
    assert (update.quantity, update.price, update.trigger_price, update.order_type) == (3, D("72.7525"), D("0"),
                                                                                        "LIMIT")  # fmt: skip


def test_the_sequence_of_an_orders_history_never_goes_back():
    history = [
        {"order_id": "171229000724687", "status": s, "order_timestamp": t, "exchange_timestamp": e}
        for s, t, e in [("PUT ORDER REQ RECEIVED", "2017-12-29 11:06:52", None), ("OPEN", "2017-12-29 11:06:52",
                        "2017-12-29 11:06:52"), ("MODIFY VALIDATION PENDING", "2017-12-29 11:08:16",
                        "2017-12-29 11:06:52")]
    ]  # fmt: skip
    sequences = [update_from_kite_order(row).sequence for row in history]
    assert sequences == sorted(sequences) and sequences[0] < sequences[-1]


def test_trades_become_fills_by_order_with_unique_ids_exact_prices_and_ist_times():
    trades = [
        {"trade_id": "10000000", "order_id": "200000000000000", "exchange": "NSE", "tradingsymbol": "SBIN",
         "instrument_token": 779521, "average_price": 420.65, "quantity": 1, "exchange_order_id": "300000000000000",
         "fill_timestamp": "2021-05-31 09:16:39", "exchange_timestamp": "2021-05-31 09:16:39"},
        {"trade_id": "10000000", "order_id": "500000000000000", "exchange": "CDS", "tradingsymbol": "USDINR21JUNFUT",
         "instrument_token": 412675, "average_price": 72.755, "quantity": 1, "exchange_order_id": "600000000000000",
         "fill_timestamp": datetime(2021, 5, 31, 11, 18, 27)},  # kiteconnect parses it (naive)
    ]  # fmt: skip
    fills = fills_from_kite_trades(trades, tick_sizes={779521: D("0.05"), 412675: D("0.0025")})
    [sbin], [usdinr] = fills["200000000000000"], fills["500000000000000"]
    assert sbin.trade_id != usdinr.trade_id  # the exchanges' trade ids collide; ours do not
    assert (sbin.price, usdinr.price) == (D("420.65"), D("72.7550"))
    assert D(72.755) != D("72.755")  # the float's own expansion
    assert sbin.at == datetime(2021, 5, 31, 9, 16, 39, tzinfo=IST) and usdinr.at.tzinfo is not None


def test_slice_trades_are_the_parents_fills():
    trades = [{"trade_id": str(n), "order_id": child, "average_price": 12.3, "quantity": 75}
              for n, child in enumerate(["c1", "c2", "c2"])]  # fmt: skip
    fills = fills_from_kite_trades(trades, parents={"c1": "p", "c2": "p"})
    assert list(fills) == ["p"] and sum(f.quantity for f in fills["p"]) == 225


def _slice(order_id, status, quantity, filled, message=None):
    return {"order_id": order_id, "status": status, "quantity": quantity, "filled_quantity": filled,
            "status_message": message, "tags": ["TP7", "autoslice", "autoslice:P1"],
            "exchange_update_timestamp": "2025-08-07 13:38:02"}  # fmt: skip


@pytest.mark.parametrize(
    ("children", "status"),
    [([("OPEN", 1800, 0), ("COMPLETE", 1800, 1800)], state.OPEN),
     ([("TRIGGER PENDING", 1800, 0), ("TRIGGER PENDING", 200, 0)], state.TRIGGER_PENDING),
     ([("COMPLETE", 1800, 1800), ("COMPLETE", 200, 200)], state.COMPLETE),
     ([("COMPLETE", 1800, 1800), ("CANCELLED", 200, 50)], state.CANCELLED),
     ([("COMPLETE", 1800, 1800)], state.CANCELLED),  # the second slice was refused at placement
     ([("REJECTED", 1800, 0), ("REJECTED", 200, 0)], state.REJECTED)],
)  # fmt: skip
def test_a_sliced_orders_status_follows_its_slices(children, status):
    rows = [_slice(f"c{n}", *child, message="margin" if child[0] == "REJECTED" else None)
            for n, child in enumerate(children)]  # fmt: skip
    rows.append({**_slice("other", "OPEN", 5, 0), "tags": ["autoslice:P2"]})  # another order's slice
    update = update_from_autoslice("P1", rows, quantity=2000)
    assert update.status == status and update.broker_order_id == "P1"


@given(st.decimals(min_value=D("0.05"), max_value=D("999999.95"), places=2))
def test_any_two_place_price_survives_kites_float_exactly(price):
    assert kite_decimal(float(price), tick_size=D("0.05")) == price


@given(st.decimals(min_value=D("0.0025"), max_value=D("9999.9975"), places=4))
def test_any_four_place_price_survives_kites_float_exactly(price):
    assert kite_decimal(float(price), tick_size=D("0.0025")) == price


def test_a_price_off_the_tick_places_is_kept_not_rounded_away():
    assert kite_decimal(420.675, tick_size=D("0.05")) == D("420.6750")
    assert [kite_decimal(v) for v in (None, "", True, "nan", "x")] == [None] * 5
