"""Switching a strategy between PAPER and LIVE: the one service that changes ``Strategy.mode``.

A LIVE strategy's orders go to Kite with real money. The switch needs the permission
``oms.change_strategy_mode`` (superusers have it) and the strategy's name typed as the
confirmation, and it is refused, with the reason, when

- going LIVE without the Kite credentials the broker and the postbacks need
  (``KITE_API_KEY``, a usable Kite session, ``KITE_API_SECRET``): credentials alone
  never make a strategy live, and a strategy is never made live without them;
- the strategy has working orders or open positions (either way): a position is the
  strategy's, whatever broker made it, so paper positions carried into LIVE would be
  "reduced" with real orders that open real ones, and LIVE orders left working when going
  back to PAPER would fill at Kite unseen. Flatten first (the kill switch for the strategy,
  with cancel and square off, does both).

The switch locks the strategy row as placements do (``oms.services`` serialises them on the
same lock), so no order is placed under the old mode once the switch has decided. Every
switch is a ``StrategyModeChange`` row written in the same transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from oms import state
from oms.models import Mode, Order, Position, Strategy, StrategyModeChange
from oms.risk.context import Limits

logger = logging.getLogger(__name__)

PERMISSION = "oms.change_strategy_mode"
OPEN_STATUSES = sorted(state.WORKING | state.PENDING)

LIMIT_LABELS = {
    "max_order_quantity": "Max order quantity (units)",
    "max_order_value": "Max order value (₹)",
    "max_position_quantity": "Max position quantity (units)",
    "max_open_positions": "Max open positions",
    "max_risk_per_trade_percent": "Max risk per trade (% of capital)",
    "min_reward_risk": "Min reward:risk",
    "max_daily_loss": "Max daily loss (₹)",
    "max_drawdown": "Max drawdown (₹)",
    "max_position_loss": "Max loss on one position (₹)",
    "price_band_percent": "Price band (% from the last price)",
    "max_order_to_trade_ratio": "Max order-to-trade ratio (warning)",
}


class ModeSwitchRefused(Exception):
    """The switch was not made; ``reasons`` says why, each a sentence a person can act on."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(" ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class LimitShown:
    name: str
    label: str
    value: Any
    shown: str  # the value as a person reads it
    own: bool  # the strategy's own limit; else the global setting
    setting: str


def amount_shown(value: Any) -> str:
    """``25000.0000`` -> ``25000.00``; ``1.5`` stays ``1.50``; more places only when needed."""
    if not isinstance(value, Decimal):
        return str(value)
    cents = value.quantize(Decimal("0.01"))
    return f"{cents if cents == value else value.normalize():f}"


def strategy_limits_shown(strategy: Strategy) -> list[LimitShown]:
    """Each limit that applies to ``strategy``: its own where set, else the global ``OMS_*``."""
    limits = Limits.for_strategy(strategy)
    return [
        LimitShown(name=f.name, label=LIMIT_LABELS.get(f.name, f.name), value=getattr(limits, f.name),
                   shown=amount_shown(getattr(limits, f.name)), own=getattr(strategy, f.name, None) is not None,
                   setting=f"OMS_{f.name.upper()}")
        for f in fields(Limits)
    ]  # fmt: skip


def market_protection_shown(value: Decimal | None) -> str:
    if value is None or value == -1:
        return "-1 (the exchange's automatic protection)"
    return f"{value.normalize():f}%"


def kite_live_missing() -> list[str]:
    """What a LIVE strategy needs and does not have (empty: nothing): the settings, and a
    usable Kite session (``kitesession.store``: a valid login, or the bootstrap token)."""
    from kitesession.store import session_state

    missing = []
    if not settings.KITE_API_KEY:
        missing.append("KITE_API_KEY (the Kite Connect app's API key)")
    elif not (session := session_state()).usable:
        detail = session.detail
        if settings.KITE_ACCESS_TOKEN_FILE and not _token_file_read():
            detail += "; KITE_ACCESS_TOKEN_FILE is empty or cannot be read"
        missing.append(f"a usable Kite access token ({detail}): log in to Kite from the portal (/kite/login/), "
                       "or set KITE_ACCESS_TOKEN or KITE_ACCESS_TOKEN_FILE (today's access token)")  # fmt: skip
    if not settings.KITE_API_SECRET:
        missing.append("KITE_API_SECRET (Kite's order postbacks are verified with it)")
    return missing


def _token_file_read() -> str:
    try:
        return Path(settings.KITE_ACCESS_TOKEN_FILE).read_text().strip()
    except OSError:
        return ""


def strategy_open_exposure(strategy: Strategy) -> tuple[int, int]:
    """The strategy's working orders and open (non-flat) positions, whichever broker."""
    orders = Order.objects.filter(strategy=strategy, status__in=OPEN_STATUSES).count()
    positions = Position.objects.filter(strategy=strategy).exclude(quantity=0).count()
    return orders, positions


def strategy_mode_problems(*, strategy: Strategy, mode: str) -> list[str]:
    """Why ``strategy`` cannot be switched to ``mode`` now (empty: it can)."""
    if mode not in Mode.values:
        return [f"{mode!r} is not a mode: PAPER or LIVE."]
    if strategy.mode == mode:
        return [f"Strategy {strategy.name} is already {mode}."]
    problems = []
    if mode == Mode.LIVE:
        missing = kite_live_missing()
        if missing:
            problems.append(
                f"Kite is not configured for live orders; missing: {'; '.join(missing)}. Set them in the "
                "environment (or .env) of every portal process and restart it."
            )
    orders, positions = strategy_open_exposure(strategy)
    if orders or positions:
        broker = "at Kite" if strategy.mode == Mode.LIVE else "on paper"
        what = " and ".join(
            text for count, text in ((orders, f"{orders} working order{'s' if orders != 1 else ''}"),
                                     (positions, f"{positions} open position{'s' if positions != 1 else ''}"))
            if count
        )  # fmt: skip
        problems.append(
            f"Strategy {strategy.name} has {what} {broker}: a strategy switches between PAPER and LIVE only "
            "when flat, so that no position or order of one mode is carried into the other. Cancel the "
            "orders and square off the positions first (admin → Kill switch events → Engage or release, for "
            "this strategy, with “Cancel open orders” and “Square off”)."
        )
    return problems


def _confirmed(strategy: Strategy) -> dict[str, Any]:
    """What the confirmation page showed, for the audit row."""
    return {
        "capital": str(strategy.capital),
        "enabled": strategy.enabled,
        "algo_id": strategy.algo_id,
        "market_protection": None if strategy.market_protection is None else str(strategy.market_protection),
        "allow_autoslice": strategy.allow_autoslice,
        "limits": {
            limit.name: {"value": str(limit.value), "own": limit.own}
            for limit in strategy_limits_shown(strategy)
        },
    }


def strategy_mode_set(
    *, strategy_id: int, mode: str, by: Any, confirmation: str, note: str = ""
) -> StrategyModeChange:
    """Switch strategy ``strategy_id`` to ``mode`` (PAPER or LIVE) for ``by``, who typed
    ``confirmation`` (the strategy's name). Raises ``ModeSwitchRefused`` with the reasons;
    nothing changes then."""
    if by is None or not by.has_perm(PERMISSION):
        raise ModeSwitchRefused(["Switching a strategy between PAPER and LIVE needs the permission “Can switch a "
                                 "strategy between paper and live” (oms.change_strategy_mode)."])  # fmt: skip
    with transaction.atomic():
        # The lock placements take: none is placed under the old mode after this decides.
        strategy = Strategy.objects.select_for_update().get(pk=strategy_id)
        problems = []
        if (confirmation or "").strip() != strategy.name:
            problems.append(f"Type the strategy's name, {strategy.name}, to confirm.")
        problems += strategy_mode_problems(strategy=strategy, mode=mode)
        if problems:
            raise ModeSwitchRefused(problems)
        old = strategy.mode
        strategy.mode = mode
        strategy.save(update_fields=["mode", "updated_at"])
        change = StrategyModeChange.objects.create(
            strategy=strategy, at=timezone.now(), by=by, by_username=by.get_username(), old_mode=old, new_mode=mode,
            note=(note or "").strip(), confirmed=_confirmed(strategy),
        )  # fmt: skip
    logger.warning(
        "strategy %s switched %s -> %s by user %s (change %s)", strategy.pk, old, mode, by.pk, change.pk
    )
    return change
