"""The real-time risk monitor: mark positions to market from the latest ticks, keep the
day's P&L, peak and drawdown per strategy, and act on the limits.

``risk_monitor_run()`` runs every ``OMS_RISK_MONITOR_SECONDS`` inside the ingestion
process (which has the ticks; in one-command mode too), and once a minute as a django-q2
schedule as a backstop (django-q2's scheduler wakes only every 30 s, too coarse for risk).
It takes a lock, so two runs never act twice. On a limit:

- a position whose loss today (its day's mark to market, ``m2m``: today's trades and the
  move of what was carried in, never an earlier day's loss) reaches ``max_position_loss``
  is squared off (a market order);
- a strategy whose day P&L reaches ``-max_daily_loss``, or falls ``max_drawdown`` below
  the day's peak, gets its own kill switch engaged automatically in REDUCING mode (it can
  still flatten; ``OMS_AUTO_SQUARE_OFF`` also squares it off);
- a kill switch that asked for a square-off and still stands has what is still open
  squared off again (``oms.killswitch.square_off_standing``);
- paper orders no price will end are ended (``oms.brokers.paper.paper_housekeeping``:
  TTL and DAY expiry, orders left in PUT ORDER REQ RECEIVED).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from oms import state
from oms.models import DailyStats, Order, Position, Strategy, TradingState
from oms.risk import Limits
from oms.updates import position_mark, roll_day
from tradingportal.locks import LockHeld, named_lock

logger = logging.getLogger(__name__)
MONITOR_LOCK = "oms-risk-monitor"
ZERO = Decimal(0)


def risk_monitor_run() -> dict[str, Any]:
    """One pass; returns what it did. Skips (``{"skipped": ...}``) if another pass runs."""
    try:
        with named_lock(MONITOR_LOCK):
            return _run()
    except LockHeld:
        return {"skipped": "another risk monitor pass is running"}


def _run() -> dict[str, Any]:
    from ingestion.latest import latest_ticks
    from oms.brokers.paper import paper_housekeeping
    from oms.killswitch import square_off_standing

    housekeeping = paper_housekeeping()
    now = timezone.now()
    today = timezone.localdate(now)
    positions = list(Position.objects.exclude(quantity=0).select_related("strategy", "instrument"))
    # A delisted contract's token may name a new contract now (Kite reuses tokens): its
    # ticks are not this position's prices.
    ticks = latest_ticks(sorted({p.instrument_token for p in positions if p.instrument.is_listed}))
    unrealised: dict[int, Decimal] = defaultdict(lambda: ZERO)
    marked = 0
    breaches: list[Position] = []
    for position in positions:
        tick = ticks.get(position.instrument_token) if position.instrument.is_listed else None
        with transaction.atomic():
            locked = Position.objects.select_for_update().get(pk=position.pk)
            roll_day(locked, today)
            if tick and tick.get("last_price"):
                position_mark(locked, Decimal(tick["last_price"]))
                locked.marked_at = now
                marked += 1
            locked.save()
        unrealised[locked.strategy_id] += locked.unrealised
        limit = Limits.for_strategy(position.strategy).max_position_loss
        if locked.quantity and locked.m2m <= -limit:
            breaches.append(locked)
    squared = [p.pk for p in breaches if _square_off_once(p, reason="max_position_loss")]
    engaged = _day_limits(today=today, unrealised=unrealised, now=now)
    standing = square_off_standing()
    return {"marked": marked, "positions": len(positions), "squared_off": squared, "engaged": engaged,
            "square_offs_kept_up": standing["placed"], **housekeeping}  # fmt: skip


def _square_off_once(position: Position, *, reason: str) -> bool:
    from oms.killswitch import position_square_off, square_off_kept_up

    working = Order.objects.filter(
        strategy=position.strategy, instrument_id=position.instrument_id, product=position.product,
        source="risk_monitor", status__in=sorted(state.WORKING | state.PENDING),
    ).order_by("pk").first()  # fmt: skip
    if working is not None:
        # On its way; one Kite has not answered for is retried (never sent twice).
        return square_off_kept_up(working) is not None
    key = f"risk-monitor-{reason}-{position.pk}-{position.quantity}-{timezone.now():%Y%m%d%H%M}"
    order = position_square_off(position=position, source="risk_monitor", key=key)
    logger.warning("risk monitor squared off position %s (%s): order %s", position.pk, reason,
                   order.pk if order else None)  # fmt: skip
    return order is not None


def _day_limits(*, today: Any, unrealised: dict[int, Decimal], now: Any) -> list[str]:
    from oms.killswitch import kill_switch_set, trading_state_of

    engaged = []
    for strategy in Strategy.objects.all():
        with transaction.atomic():
            stats, _ = DailyStats.objects.select_for_update().get_or_create(
                strategy=strategy, day=today, defaults={"updated_at": now}
            )
            stats.unrealised = unrealised.get(strategy.pk, ZERO)
            pnl = stats.pnl
            stats.peak_pnl = max(stats.peak_pnl, pnl)
            stats.max_drawdown = max(stats.max_drawdown, stats.peak_pnl - pnl)
            stats.updated_at = now
            stats.save(update_fields=["unrealised", "peak_pnl", "max_drawdown", "updated_at"])
        limits = Limits.for_strategy(strategy)
        rule = reason = ""
        if pnl <= -limits.max_daily_loss:
            rule, reason = (
                "daily_loss",
                f"today's loss {-pnl:.2f} reached the limit {limits.max_daily_loss:.2f}",
            )
        elif stats.peak_pnl - pnl >= limits.max_drawdown:
            rule, reason = (
                "drawdown",
                (
                    f"P&L fell {stats.peak_pnl - pnl:.2f} from today's peak, the limit is {limits.max_drawdown:.2f}"
                ),
            )
        if rule and trading_state_of(strategy=strategy) == TradingState.ACTIVE:
            kill_switch_set(state=TradingState.REDUCING, by=None, automatic=True, rule=rule, reason=reason,
                            strategy=strategy, square_off=settings.OMS_AUTO_SQUARE_OFF)  # fmt: skip
            engaged.append(strategy.name)
    return engaged
