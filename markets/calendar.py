"""When each exchange trades: its hours (settings) and its holidays (``MarketHoliday``).

``is_trading_day(*, exchange, day)``, ``market_open(*, exchange, at)`` and
``market_status(*, exchange, at)`` (open, or closed for the weekend, a named holiday,
before the open or after the close, with the next open) answer from a per-process copy
of the year's holidays: one query per year, reloaded when the IST day changes, every
``MARKET_CALENDAR_REFRESH_SECONDS``, and as soon as another process saves a holiday (a
version key in the shared cache, bumped on commit). Never a query per call.

Exchanges: NSE, BSE, NFO, BFO follow NSE's holiday list and the equity hours; CDS and BCD
NSE's list plus the currency segment's own holidays and the currency hours; MCX its own
list and hours, its close moving with US daylight saving time (23:30 while the US is on
summer time, ``MARKET_MCX_CLOSE_US_WINTER`` otherwise). Any other exchange name is
answered with NSE's calendar. Times are Asia/Kolkata.
"""

from __future__ import annotations

import logging
import threading
import time as clock
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from tradingportal.logging import RepeatedFailure

logger = logging.getLogger(__name__)
IST = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")
# The holiday lists (MarketHoliday.segment) each exchange follows.
HOLIDAY_LISTS: dict[str, tuple[str, ...]] = {
    "NSE": ("NSE",), "BSE": ("NSE",), "NFO": ("NSE",), "BFO": ("NSE",),
    "CDS": ("NSE", "CDS"), "BCD": ("NSE", "CDS"),
    "MCX": ("MCX",),
}  # fmt: skip
EXCHANGES = tuple(HOLIDAY_LISTS)
DEFAULT_EXCHANGE = "NSE"
VERSION_KEY = "markets:calendar:version"
# The shared version is read at most this often (a cache round trip).
VERSION_CHECK_SECONDS = 1.0
# How far ahead the next open is looked for (a fortnight of holidays is not known to happen).
LOOK_AHEAD_DAYS = 30


@dataclass(frozen=True)
class Holiday:
    segment: str
    day: date
    description: str
    session: str
    opens_at: time | None
    closes_at: time | None


@dataclass(frozen=True)
class MarketStatus:
    exchange: str
    is_open: bool
    reason: str  # "open" | "weekend" | "holiday" | "before_open" | "after_close"
    holiday: str  # the day's holiday (also on a day with only one session), else ""
    closes_at: datetime | None  # while open
    next_open: datetime | None
    detail: str  # one sentence for people: "NSE closed: holiday (Christmas); opens Mon 28 Dec 09:15 IST"
    why: str = (
        ""  # closed: "weekend", "holiday (Christmas)", "before the open", "after the close (15:30 IST)"
    )
    opens: str = ""  # closed: the next open for people, "Mon 28 Dec 09:15 IST" ("09:15 IST" today)

    def as_dict(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "open": self.is_open,
            "reason": self.reason,
            "holiday": self.holiday,
            "closes_at": self.closes_at.isoformat() if self.closes_at else None,
            "next_open": self.next_open.isoformat() if self.next_open else None,
            "detail": self.detail,
            "why": self.why,
            "opens": self.opens,
        }


# --- the holidays, cached per process ----------------------------------------------------------


@dataclass
class _Year:
    rows: dict[tuple[str, date], Holiday]
    loaded_on: date
    loaded_at: float
    version: str


_years: dict[int, _Year] = {}
_lock = threading.Lock()
_load_failure = RepeatedFailure(logger, "loading the market holidays")
_version_failure = RepeatedFailure(logger, "reading the market calendar's version")
_warned_empty: set[int] = set()
_checked: list[Any] = [0.0, None]  # when the version was last read, and what it was


def calendar_forget(**_: Any) -> None:
    """Drop this process's copy now and tell the others on commit (the holiday signals)."""
    calendar_forget_here()
    transaction.on_commit(_version_bump)


def calendar_forget_here() -> None:
    """Drop this process's copy: the next question reloads the holidays."""
    with _lock:
        _years.clear()
        _checked[0] = 0.0


def _version_bump() -> None:
    try:
        cache.set(VERSION_KEY, uuid.uuid4().hex, timeout=None)
    except Exception as exc:  # noqa: BLE001 - the others catch up at their next refresh
        _version_failure.failed(exc)


def _version() -> str | None:
    """The shared version (one is set if none is), or None when the cache cannot say."""
    now = clock.monotonic()
    if now - _checked[0] < VERSION_CHECK_SECONDS:
        return _checked[1]  # type: ignore[no-any-return]
    _checked[0] = now
    try:
        current = cache.get(VERSION_KEY)
        if current is None:
            cache.add(VERSION_KEY, uuid.uuid4().hex, timeout=None)
            current = cache.get(VERSION_KEY)
    except Exception as exc:  # noqa: BLE001 - fall back to the time-based refresh
        _version_failure.failed(exc)
        return None
    _version_failure.succeeded()
    _checked[1] = str(current) if current is not None else None
    return _checked[1]  # type: ignore[no-any-return]


def _holidays(year: int) -> dict[tuple[str, date], Holiday]:
    today = timezone.localtime(timezone.now(), IST).date()
    cached = _years.get(year)
    version = _version()
    if (
        cached is not None
        and cached.loaded_on == today
        and clock.monotonic() - cached.loaded_at < settings.MARKET_CALENDAR_REFRESH_SECONDS
        and (version is None or version == cached.version)
    ):
        return cached.rows
    from markets.models import MarketHoliday

    try:
        rows = {
            (row.segment, row.day): Holiday(
                row.segment, row.day, row.description, row.session, row.opens_at, row.closes_at
            )  # fmt: skip
            for row in MarketHoliday.objects.filter(day__year=year)
        }
    except Exception as exc:
        if cached is None:
            raise
        _load_failure.failed(exc)  # the last copy serves until the database answers again
        return cached.rows
    _load_failure.succeeded()
    with _lock:
        _years[year] = _Year(rows, today, clock.monotonic(), version or "")
    if not any(segment == "NSE" for segment, _ in rows) and year not in _warned_empty:
        _warned_empty.add(year)
        logger.warning("no NSE holidays are entered for %s: every weekday counts as a trading day "
                       "until the exchange's list is added in the admin (Market holidays)", year)  # fmt: skip
    return rows


def holidays_known(*, year: int) -> bool:
    """Whether NSE's holiday list for ``year`` has been entered (the seed covers 2026)."""
    return any(segment == "NSE" for segment, _ in _holidays(year))


def holiday(*, exchange: str, day: date) -> Holiday | None:
    """The day's holiday row for ``exchange``: of its lists, the one that trades least."""
    rows = _holidays(day.year)
    found = [
        rows[(segment, day)] for segment in HOLIDAY_LISTS.get(exchange, ("NSE",)) if (segment, day) in rows
    ]
    if not found:
        return None
    return min(found, key=lambda row: row.session != "closed")


# --- hours ---------------------------------------------------------------------------------------


def _hours(exchange: str, day: date) -> tuple[time, time]:
    text = settings.MARKET_HOURS.get(exchange) or settings.MARKET_HOURS[DEFAULT_EXCHANGE]
    opens, closes = (time.fromisoformat(part) for part in text.split("-"))
    if exchange == "MCX" and not _us_summer_time(day):
        closes = time.fromisoformat(settings.MARKET_MCX_CLOSE_US_WINTER)
    return opens, closes


def _us_summer_time(day: date) -> bool:
    """Whether the US is on daylight saving time that (IST) trading day: MCX's close follows."""
    return bool(datetime.combine(day, time(12), tzinfo=NEW_YORK).dst())


def trading_hours(*, exchange: str, day: date) -> tuple[datetime, datetime] | None:
    """When ``exchange`` trades on ``day`` (aware, IST), or None: weekend or closed all day."""
    opens, closes = _hours(exchange, day)
    row = holiday(exchange=exchange, day=day)
    if row is not None and row.session == "special" and row.opens_at and row.closes_at:
        opens, closes = row.opens_at, row.closes_at
    elif day.weekday() >= 5 or (row is not None and row.session == "closed"):
        return None
    elif row is not None:
        evening = time.fromisoformat(settings.MARKET_MCX_EVENING_OPENS)
        if row.session == "morning_only":
            closes = min(closes, evening)
        elif row.session == "evening_only":
            opens = max(opens, evening)
    return datetime.combine(day, opens, tzinfo=IST), datetime.combine(day, closes, tzinfo=IST)


def is_trading_day(*, exchange: str, day: date) -> bool:
    """Whether ``exchange`` trades at all on ``day`` (a session-only holiday counts)."""
    return trading_hours(exchange=exchange, day=day) is not None


def market_open(*, exchange: str, at: datetime) -> bool:
    hours = trading_hours(exchange=exchange, day=timezone.localtime(at, IST).date())
    return hours is not None and hours[0] <= at < hours[1]


def next_open(*, exchange: str, at: datetime) -> datetime | None:
    """The first session start after ``at`` (None if none within LOOK_AHEAD_DAYS)."""
    day = timezone.localtime(at, IST).date()
    for offset in range(LOOK_AHEAD_DAYS + 1):
        hours = trading_hours(exchange=exchange, day=day + timedelta(days=offset))
        if hours is not None and hours[0] > at:
            return hours[0]
    return None


def _when(moment: datetime, at: datetime) -> str:
    local, today = timezone.localtime(moment, IST), timezone.localtime(at, IST).date()
    return f"{local:%H:%M} IST" if local.date() == today else f"{local:%a %d %b %H:%M} IST"


def market_status(*, exchange: str, at: datetime | None = None) -> MarketStatus:
    """Open (until when) or closed (why, and the next open) for ``exchange`` at ``at``."""
    at = at or timezone.now()
    day = timezone.localtime(at, IST).date()
    row = holiday(exchange=exchange, day=day)
    name = row.description if row is not None else ""
    hours = trading_hours(exchange=exchange, day=day)
    if hours is not None and hours[0] <= at < hours[1]:
        session = f" ({name}: {row.session.replace('_', ' ')})" if row is not None else ""
        return MarketStatus(exchange, True, "open", name, hours[1], None,
                            f"{exchange} open until {_when(hours[1], at)}{session}")  # fmt: skip
    upcoming = next_open(exchange=exchange, at=at)
    if row is not None and day.weekday() < 5:
        reason, why = "holiday", f"holiday ({name})"
    elif hours is None:
        reason, why = "weekend", "weekend"
    elif at < hours[0]:
        reason, why = "before_open", "before the open"
    else:
        reason, why = "after_close", f"after the close ({_when(hours[1], at)})"
    opens = _when(upcoming, at) if upcoming is not None else ""
    then = f"; opens {opens}" if opens else ""
    return MarketStatus(
        exchange, False, reason, name, None, upcoming, f"{exchange} closed: {why}{then}", why, opens
    )


def markets_status(*, exchanges: tuple[str, ...] = EXCHANGES, at: datetime | None = None) -> dict[str, Any]:
    """What the dashboard is sent with the feed's status: the time it was computed (the
    server's clock decides, not the browser's) and each exchange's ``market_status``."""
    at = at or timezone.now()
    return {
        "at": timezone.localtime(at, IST).isoformat(),
        "exchanges": {exchange: market_status(exchange=exchange, at=at).as_dict() for exchange in exchanges},
    }


def market_summary(*, exchanges: list[str], at: datetime | None = None) -> dict[str, Any]:
    """One line for ``exchanges`` (those on a page; NSE without any): open while any of them
    trades, else closed with the reason of the one that opens first."""
    at = at or timezone.now()
    statuses = [market_status(exchange=exchange, at=at) for exchange in sorted(set(exchanges)) or ["NSE"]]
    trading = [status for status in statuses if status.is_open]
    if trading:
        return {"open": True, "text": "market open: " + "; ".join(status.detail for status in trading)}
    first = min(statuses, key=lambda status: status.next_open or datetime.max.replace(tzinfo=IST))
    then = f" ({first.exchange} opens {first.opens})" if first.opens else ""
    return {"open": False, "text": f"market closed: {first.why}{then}"}
