"""The risk monitor: marks to market, keeps the day's peak, acts on the limits."""

from decimal import Decimal as D

import pytest

from oms.killswitch import trading_state_of
from oms.models import DailyStats, KillSwitchEvent, Order, Position
from oms.monitor import risk_monitor_run
from tests.oms.helpers import place, price

pytestmark = pytest.mark.django_db


def test_positions_are_marked_from_the_latest_ticks(reliance, trader):
    price(reliance.instrument_token, "100")
    place(reliance, user=trader, quantity=10)
    price(reliance.instrument_token, "104")
    report = risk_monitor_run()
    assert report["marked"] == 1
    position = Position.objects.get()
    assert position.last_price == D("104") and position.unrealised == D("40") and position.m2m == D("40")
    stats = DailyStats.objects.get()
    assert stats.unrealised == D("40") and stats.peak_pnl == D("40")
    price(reliance.instrument_token, "101")
    risk_monitor_run()
    stats.refresh_from_db()
    assert stats.peak_pnl == D("40") and stats.max_drawdown == D("30")


def test_a_position_past_its_loss_limit_is_squared_off_once(reliance, trader, manual):
    manual.max_position_loss = D("50")
    manual.save()
    price(reliance.instrument_token, "100")
    place(reliance, user=trader, quantity=10)
    price(reliance.instrument_token, "94")  # -60
    report = risk_monitor_run()
    assert len(report["squared_off"]) == 1
    square_off = Order.objects.get(source="risk_monitor")
    assert (
        square_off.transaction_type == "SELL"
        and square_off.quantity == 10
        and square_off.status == "COMPLETE"
    )
    assert Position.objects.get().quantity == 0
    assert risk_monitor_run()["squared_off"] == []  # flat now: nothing more to do


def test_the_daily_loss_engages_the_strategys_switch_in_reducing_mode(reliance, trader, manual):
    manual.max_daily_loss = D("100")
    manual.save()
    price(reliance.instrument_token, "100")
    place(reliance, user=trader, quantity=10)
    price(reliance.instrument_token, "85")  # -150
    report = risk_monitor_run()
    assert report["engaged"] == ["manual"]
    event = KillSwitchEvent.objects.get()
    assert event.automatic and event.rule == "daily_loss" and event.strategy == manual
    assert trading_state_of(strategy=manual) == "REDUCING" and trading_state_of() == "ACTIVE"
    assert place(reliance, user=trader, quantity=1).refusal.rule == "kill_switch"
    assert place(reliance, user=trader, quantity=10, transaction_type="SELL").refusal is None
    assert risk_monitor_run()["engaged"] == []  # already engaged: not again


def _yesterday(position):
    """Make ``position`` yesterday's (its trades and marks from the day before)."""
    from datetime import timedelta

    Position.objects.filter(pk=position.pk).update(day=position.day - timedelta(days=1))
    DailyStats.objects.update(day=position.day - timedelta(days=1))


def test_a_positions_loss_limit_counts_today_not_its_history(reliance, trader, manual):
    manual.max_position_loss = D("50")
    manual.save()
    price(reliance.instrument_token, "100")
    place(reliance, user=trader, quantity=10)
    price(reliance.instrument_token, "94")
    place(reliance, user=trader, quantity=10, transaction_type="SELL")  # -60, yesterday
    _yesterday(Position.objects.get())
    place(reliance, user=trader, quantity=10)  # today, at 94: nothing lost today
    report = risk_monitor_run()
    assert report["squared_off"] == [] and Position.objects.get().quantity == 10


def test_a_carried_positions_day_mtm_starts_from_the_close(reliance, trader):
    price(reliance.instrument_token, "100")
    place(reliance, user=trader, quantity=10)
    price(reliance.instrument_token, "90")
    risk_monitor_run()
    position = Position.objects.get()
    assert position.m2m == D("-100")
    _yesterday(position)
    from django.core.cache import cache

    cache.clear()  # no price today yet
    risk_monitor_run()
    position.refresh_from_db()
    assert position.overnight_quantity == 10 and position.close_price == D("90") and position.m2m == 0
    assert position.unrealised == D("-100")  # against the cost, as before
