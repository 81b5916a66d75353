"""Every pre-trade rule, each with a case that passes and one that fails."""

from datetime import date
from decimal import Decimal as D

import pytest
from django.test import override_settings

from oms import state
from oms.killswitch import kill_switch_set
from oms.models import DailyStats, OrderEvent, Position
from tests.factories import InstrumentFactory, NiftyOptionFactory
from tests.oms.helpers import place, price

pytestmark = pytest.mark.django_db


def refused(result, rule):
    assert result.refusal is not None, f"expected {rule} to refuse, the order is {result.order.status}"
    assert result.refusal.rule == rule, result.refusal
    assert result.order.status == state.RISK_REJECTED and result.order.risk_rule == rule
    assert result.order.events.filter(kind=OrderEvent.Kind.RISK_REJECTED).exists()
    return result.refusal.detail


def accepted(result):
    assert result.refusal is None, result.refusal
    assert result.order.status != state.RISK_REJECTED
    return result.order


@pytest.fixture
def live(reliance):
    price(reliance.instrument_token, "100.00")
    return reliance


def test_kill_switch_halts_everything_and_reducing_lets_positions_shrink(live, trader):
    accepted(place(live, user=trader, quantity=10))
    kill_switch_set(state="HALTED", by=trader, reason="test")
    assert "kill switch" in refused(place(live, user=trader, quantity=1), "kill_switch")
    kill_switch_set(state="REDUCING", by=trader, reason="flatten only")
    refused(place(live, user=trader, quantity=1), "kill_switch")  # would grow the long
    refused(place(live, user=trader, quantity=20, transaction_type="SELL"), "kill_switch")  # would flip
    accepted(place(live, user=trader, quantity=10, transaction_type="SELL"))
    kill_switch_set(state="ACTIVE", by=trader, reason="")
    accepted(place(live, user=trader, quantity=1))


def test_a_disabled_strategy_cannot_trade(live, trader, manual):
    manual.enabled = False
    manual.save()
    refused(place(live, user=trader), "strategy_disabled")
    manual.enabled = True
    manual.save()
    accepted(place(live, user=trader))


def test_the_instrument_must_be_listed_and_unexpired(trader):
    delisted = InstrumentFactory(is_listed=False)
    refused(place(delisted, user=trader, order_type="LIMIT", price="100"), "instrument")
    expired = NiftyOptionFactory(expiry=date(2020, 1, 30))
    refused(place(expired, user=trader, order_type="LIMIT", price="100", quantity=75), "instrument")
    current = NiftyOptionFactory()
    accepted(place(current, user=trader, order_type="LIMIT", price="100", quantity=75))


def test_lot_and_tick_sizes(trader):
    option = NiftyOptionFactory(tick_size=D("0.05"), lot_size=75)
    assert "lot size 75" in refused(place(option, user=trader, order_type="LIMIT", price="100", quantity=70),
                                    "lot_size")  # fmt: skip
    assert "tick size 0.05" in refused(place(option, user=trader, order_type="LIMIT", price="100.03", quantity=75),
                                       "tick_size")  # fmt: skip
    accepted(place(option, user=trader, order_type="LIMIT", price="100.05", quantity=150))


def test_max_quantity_and_order_value(live, trader, manual):
    manual.max_order_quantity, manual.max_order_value = 100, D("5000")
    manual.save()
    refused(place(live, user=trader, quantity=101, order_type="LIMIT", price="10"), "max_quantity")
    refused(place(live, user=trader, quantity=60), "max_order_value")  # 60 x 100 at the live price
    accepted(place(live, user=trader, quantity=50))


def test_max_position_and_open_positions(live, trader, manual):
    manual.max_position_quantity, manual.max_open_positions = 30, 1
    manual.save()
    accepted(place(live, user=trader, quantity=25))
    refused(place(live, user=trader, quantity=10), "max_position")
    accepted(place(live, user=trader, quantity=5))
    other = InstrumentFactory(is_active=True)
    price(other.instrument_token, "50")
    refused(place(other, user=trader, quantity=1), "max_open_positions")
    accepted(place(live, user=trader, quantity=30, transaction_type="SELL"))  # reducing is always fine
    accepted(place(other, user=trader, quantity=1))  # the first one is flat now


def test_risk_per_trade_and_reward_risk(live, trader, manual):
    manual.capital = D("100000")
    manual.max_risk_per_trade_percent, manual.min_reward_risk = D("1"), D("2")
    manual.save()
    # Risk 10 x (100 - 80) = 200 of 1,000 allowed; reward 10 x 30 = 300: 1.5 < 2.
    refused(
        place(live, user=trader, order_type="LIMIT", price="100", stop_loss="80", target="130"), "reward_risk"
    )
    refused(place(live, user=trader, order_type="LIMIT", price="100", stop_loss="80", quantity=60),
            "risk_per_trade")  # 60 x 20 = 1,200 > 1,000  # fmt: skip
    assert "wrong side" in refused(place(live, user=trader, order_type="LIMIT", price="100", stop_loss="101"),
                                   "risk_per_trade")  # fmt: skip
    accepted(place(live, user=trader, order_type="LIMIT", price="100", stop_loss="80", target="140"))


def test_daily_loss_and_drawdown(live, trader, manual):
    manual.max_daily_loss, manual.max_drawdown = D("500"), D("800")
    manual.save()
    accepted(place(live, user=trader, quantity=10))
    stats = DailyStats.objects.get(strategy=manual)
    stats.realised = D("-600")
    stats.save()
    refused(place(live, user=trader, quantity=1), "daily_loss")
    accepted(place(live, user=trader, quantity=5, transaction_type="SELL"))  # reducing is allowed
    stats.realised, stats.peak_pnl = D("100"), D("1000")
    stats.save()
    refused(place(live, user=trader, quantity=1), "drawdown")
    stats.peak_pnl = D("200")
    stats.save()
    accepted(place(live, user=trader, quantity=1))


def test_price_band_against_the_last_price(live, trader):
    assert "price band" in refused(place(live, user=trader, order_type="LIMIT", price="115"), "price_band")
    refused(place(live, user=trader, order_type="SL", price="100", trigger_price="80"), "price_band")
    accepted(place(live, user=trader, order_type="LIMIT", price="109.95"))


def test_a_market_order_needs_a_live_price(reliance, trader):
    refused(place(reliance, user=trader), "no_live_price")
    price(reliance.instrument_token, "100", age=60)  # a minute old
    refused(place(reliance, user=trader), "no_live_price")
    price(reliance.instrument_token, "100")
    accepted(place(reliance, user=trader))


@pytest.fixture
def frozen_clock(monkeypatch):
    """Every order in the same second, as a runaway strategy would send them."""
    from django.utils import timezone

    moment = timezone.now()
    monkeypatch.setattr("oms.services.timezone.now", lambda: moment)
    return moment


@override_settings(OMS_ORDERS_PER_SECOND=3, OMS_RUNAWAY_REFUSALS_PER_MINUTE=2)
def test_order_rate_limit_and_a_runaway_engages_the_kill_switch(live, trader, frozen_clock,
                                                                django_capture_on_commit_callbacks):  # fmt: skip
    from oms.killswitch import trading_state_of

    with django_capture_on_commit_callbacks(execute=True):
        results = [place(live, user=trader, order_type="LIMIT", price="90") for _ in range(5)]
    assert [r.refusal.rule if r.refusal else "ok" for r in results] == ["ok"] * 3 + ["rate_limit"] * 2
    assert "slow down" in results[-1].refusal.detail
    assert trading_state_of() == "HALTED"  # two refusals in a minute: a runaway


@override_settings(OMS_ORDERS_PER_SECOND=100)
def test_order_to_trade_ratio_warns_but_does_not_refuse(live, trader, manual):
    manual.max_order_to_trade_ratio = D("2")
    manual.save()
    orders = [
        accepted(place(live, user=trader, order_type="LIMIT", price="90", quantity=1)) for _ in range(12)
    ]
    warnings = OrderEvent.objects.filter(order=orders[-1], kind=OrderEvent.Kind.WARNING)
    assert any("order-to-trade ratio" in w.message for w in warnings)


def test_positions_track_fills_for_the_rules(live, trader):
    accepted(place(live, user=trader, quantity=10))
    assert Position.objects.get(instrument=live).quantity == 10
