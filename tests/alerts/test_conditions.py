"""The conditions the desk hears about: each message names what it is about and links the
admin page that shows it; the feed is alerted only when down for a minute in market hours."""

import logging
from datetime import datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from alerts.conditions import (
    alert_feed_down,
    alert_kill_switch_engaged,
    alert_kite_login_needed,
    alert_order_rejected,
    alert_reconciliation_issue,
    alert_square_off_failed,
    market_hours,
)
from alerts.models import Alert, Kind, Severity
from oms.killswitch import kill_switch_set
from oms.models import Order, Position, Strategy
from tests.factories import InstrumentFactory

pytestmark = pytest.mark.django_db
IST = ZoneInfo("Asia/Kolkata")
MONDAY_10 = datetime(2026, 3, 2, 10, 0, tzinfo=IST)


@pytest.fixture
def alpha():
    return Strategy.objects.create(name="alpha")


@pytest.fixture
def reliance():
    return InstrumentFactory(tradingsymbol="RELIANCE", exchange="NSE", instrument_token=738561)


def live_order(strategy, instrument, **overrides):
    now = timezone.now()
    fields = {
        "strategy": strategy, "instrument": instrument, "exchange": instrument.exchange,
        "tradingsymbol": instrument.tradingsymbol, "instrument_token": instrument.instrument_token,
        "transaction_type": "BUY", "quantity": 10, "product": "MIS", "order_type": "MARKET", "broker": "kite",
        "broker_order_id": "250302000123456", "status": "REJECTED",
        "status_message": "Insufficient funds. Required margin is 24500.00 but available margin is 1200.00.",
        "idempotency_key": "k1", "placed_at": now, "updated_at": now,
    }  # fmt: skip
    fields.update(overrides)
    return Order.objects.create(**fields)


def test_kill_switch_engaged_by_a_person_names_the_scope_and_who(staff_user):
    event = kill_switch_set(state="HALTED", by=staff_user, reason="Nifty gap down, flat everything")
    alert = alert_kill_switch_engaged(event=event)
    assert alert.kind == Kind.KILL_SWITCH and alert.severity == Severity.CRITICAL
    assert alert.subject == "Kill switch HALTED for the whole desk (by operator)"
    assert "no new orders" in alert.body and "Reason: Nifty gap down, flat everything" in alert.body
    assert alert.link == f"/admin/oms/killswitchevent/{event.pk}/change/"
    released = kill_switch_set(state="ACTIVE", by=staff_user, reason="ok")
    assert alert_kill_switch_engaged(event=released) is None


def test_kill_switch_engaged_by_a_rule_names_the_strategy_and_rule(alpha):
    event = kill_switch_set(
        state="REDUCING", by=None, automatic=True, rule="daily_loss", strategy=alpha,
        reason="daily loss 51000.00 over the limit 50000", cancel_open=True,
    )  # fmt: skip
    alert = alert_kill_switch_engaged(event=event)
    assert alert.subject == "Kill switch REDUCING for strategy alpha (rule daily_loss)"
    assert "automatically by rule daily_loss" in alert.body and "open orders cancelled" in alert.body
    assert alert.key == "alpha:REDUCING:daily_loss"
    # The rule engaging it again within the window is the same condition.
    again = kill_switch_set(state="REDUCING", by=None, automatic=True, rule="daily_loss", strategy=alpha)
    assert alert_kill_switch_engaged(event=again).pk == alert.pk


def test_a_rejected_live_order_names_the_order_instrument_strategy_and_reason(alpha, reliance):
    order = live_order(alpha, reliance)
    alert = alert_order_rejected(order=order)
    assert alert.subject == f"LIVE order {order.pk} REJECTED: BUY 10 NSE:RELIANCE (alpha)"
    assert "Broker's reason: Insufficient funds." in alert.body and "250302000123456" in alert.body
    assert alert.link == f"/admin/oms/order/{order.pk}/change/"
    assert alert.key == f"order:{order.pk}"


def test_a_rejected_paper_order_is_not_alerted(alpha, reliance):
    assert alert_order_rejected(order=live_order(alpha, reliance, broker="paper")) is None
    assert not Alert.objects.exists()


def test_a_reconciliation_issue_names_the_difference_and_the_instrument():
    issue = SimpleNamespace(pk=3, kind="missing_fill", exchange="NSE", tradingsymbol="INFY",
                            ours={"filled_quantity": 0}, broker={"filled_quantity": 50})  # fmt: skip
    alert = alert_reconciliation_issue(issue=issue)
    assert alert.subject == "Reconciliation: missing_fill on NSE:INFY"
    assert "Ours: {'filled_quantity': 0}" in alert.body and "Broker: {'filled_quantity': 50}" in alert.body
    assert alert.link == ""  # no admin page for this stand-in; the real model's page is linked


def test_kite_login_needed_links_the_portals_kite_login_and_names_the_order(alpha, reliance, settings):
    settings.PORTAL_BASE_URL = "https://desk.example.com"
    order = live_order(alpha, reliance, status_message="Incorrect `api_key` or `access_token`.")
    alert = alert_kite_login_needed(detail=order.status_message, order=order)
    assert alert.subject == "Kite login needed: the access token was refused"
    assert f"LIVE order {order.pk} (NSE:RELIANCE, strategy alpha)" in alert.body
    assert f"https://desk.example.com/admin/oms/order/{order.pk}/change/" in alert.body
    # What to do: log in at the portal (the link, absolute); the token file only as the bootstrap.
    assert alert.link == "https://desk.example.com/kite/login/"
    assert "open https://desk.example.com/kite/login/" in alert.body
    assert "save today's token" not in alert.body
    assert "bootstrap file, KITE_ACCESS_TOKEN_FILE" in alert.body
    # Found again by the feed: the same condition, counted, not sent again.
    assert alert_kite_login_needed(detail="403 TokenException").pk == alert.pk
    assert Alert.objects.get().repeats == 1


def test_kite_login_needed_is_sent_once_per_outage_however_long_nobody_logs_in(settings):
    """The issue: at rollover "an alert fires once". The feed, reconciliation and LIVE orders
    keep finding the dead token; past ALERT_REPEAT_MINUTES that is still the same outage (a
    repeat, not sent again) until a new login; the next outage alerts again."""
    from cryptography.fernet import Fernet

    from kitesession.store import session_save

    settings.KITE_TOKEN_KEY = Fernet.generate_key().decode()
    session_save(access_token="yesterdays-token", user_id="AB1234", actor="desk",
                 now=timezone.now() - timedelta(days=1))  # fmt: skip
    first = alert_kite_login_needed(detail="403 Forbidden")
    Alert.objects.update(created_at=timezone.now() - timedelta(hours=3))  # long past the repeat window
    again = alert_kite_login_needed(detail="TokenException")
    assert again.pk == first.pk and Alert.objects.get().repeats == 1

    session_save(access_token="todays-token", user_id="AB1234", actor="desk")  # logged in again
    Alert.objects.update(created_at=timezone.now() - timedelta(minutes=1))  # the last outage's alert
    next_outage = alert_kite_login_needed(detail="403 Forbidden")
    assert next_outage.pk != first.pk and Alert.objects.count() == 2


def test_market_hours_are_the_calendar_s_for_nse_when_nothing_streams():
    assert market_hours(MONDAY_10)
    assert not market_hours(MONDAY_10.replace(hour=9, minute=14))
    assert not market_hours(MONDAY_10.replace(hour=15, minute=30))
    assert not market_hours(MONDAY_10 + timedelta(days=5))  # Saturday
    assert not market_hours(MONDAY_10 + timedelta(days=1))  # Holi, an NSE holiday (the seeded calendar)
    assert market_hours(MONDAY_10.astimezone(ZoneInfo("UTC")))  # any time zone in, IST decides


def test_market_hours_are_those_of_the_exchanges_streamed():
    holi_evening = MONDAY_10 + timedelta(days=1, hours=9)  # MCX trades Holi's evening session
    assert market_hours(holi_evening, exchanges=["MCX"]) and not market_hours(holi_evening, exchanges=["NSE"])
    assert not market_hours(holi_evening)  # nothing streams: NSE's hours
    InstrumentFactory(tradingsymbol="CRUDEOIL26MARFUT", exchange="MCX", segment="MCX-FUT", is_active=True)
    assert market_hours(holi_evening)


def test_the_feed_is_alerted_when_down_for_a_minute_in_market_hours(settings):
    settings.ALERT_FEED_DOWN_SECONDS = 60
    since = MONDAY_10 - timedelta(seconds=30)
    assert alert_feed_down(state="disconnected", down_since=since, now=MONDAY_10) is None
    alert = alert_feed_down(state="disconnected", down_since=since, error="ConnectionResetError",
                            now=MONDAY_10 + timedelta(seconds=45))  # fmt: skip
    assert alert.subject == "Market feed down for 1 min (disconnected)"
    assert "since 09:59:30 IST" in alert.body and "Last error: ConnectionResetError" in alert.body
    assert alert.link == "/admin/instruments/instrument/" and alert.severity == Severity.CRITICAL
    again = alert_feed_down(state="auth_failed", down_since=since, now=MONDAY_10 + timedelta(minutes=5))
    assert again.pk == alert.pk and Alert.objects.count() == 1
    evening = MONDAY_10.replace(hour=18)
    assert alert_feed_down(state="disconnected", down_since=evening - timedelta(hours=1), now=evening) is None


def test_a_feed_streaming_mcx_is_alerted_in_mcx_s_evening_session(settings):
    settings.ALERT_FEED_DOWN_SECONDS = 60
    evening = MONDAY_10.replace(hour=21)
    InstrumentFactory(tradingsymbol="CRUDEOIL26MARFUT", exchange="MCX", segment="MCX-FUT", is_active=True)
    alert = alert_feed_down(state="disconnected", down_since=evening - timedelta(minutes=5), now=evening)
    assert alert is not None and alert.subject == "Market feed down for 5 min (disconnected)"
    sunday = evening + timedelta(days=6)
    assert alert_feed_down(state="disconnected", down_since=sunday - timedelta(hours=1), now=sunday) is None
    assert Alert.objects.get().repeats == 0  # a weekend outage is not even counted as a repeat


def test_a_failed_square_off_names_the_position(alpha, reliance):
    position = Position.objects.create(strategy=alpha, instrument=reliance, exchange="NSE", tradingsymbol="RELIANCE",
                                       instrument_token=reliance.instrument_token, product="MIS", quantity=-25,
                                       updated_at=timezone.now())  # fmt: skip
    alert = alert_square_off_failed(position=position, reason="RISK REJECTED: price older than 10 s")
    assert alert.subject == "Square-off failed: -25 MIS NSE:RELIANCE (alpha)"
    assert "Reason: RISK REJECTED: price older than 10 s" in alert.body
    assert alert.link == f"/admin/oms/position/{position.pk}/change/"


def test_a_condition_given_a_broken_object_logs_and_returns_none(caplog):
    with caplog.at_level(logging.ERROR, logger="alerts.conditions"):
        assert alert_order_rejected(order=SimpleNamespace(broker="kite")) is None
    assert "alert_order_rejected: could not build the alert" in caplog.text
    assert not Alert.objects.exists()
