"""Reads of the instrument master: the lookup cache for hot paths, counts, stats."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Case, CharField, Count, IntegerField, Q, QuerySet, Value, When

from instruments.models import Instrument, Source, SyncRun

INDEX_UNDERLYINGS = (
    "NIFTY",
    "BANKNIFTY",
    "FINNIFTY",
    "MIDCPNIFTY",
    "NIFTYNXT50",
    "SENSEX",
    "BANKEX",
    "SENSEX50",
)

# --- feed capacity ---------------------------------------------------------------------


def feed_capacity() -> int:
    """How many instruments the feed can carry: connections x instruments per connection."""
    return settings.KITE_TICKER_MAX_CONNECTIONS * settings.KITE_TICKER_MAX_PER_CONNECTION


def active_count() -> int:
    return Instrument.objects.filter(is_active=True).count()


def active_instruments() -> QuerySet[Instrument]:
    """Active, listed Kite instruments in a stable order (the order the feed fills in)."""
    return Instrument.objects.filter(is_active=True, is_listed=True, source=Source.KITE).order_by("id")


def active_instrument_tokens() -> list[int]:
    return [t for t in active_instruments().values_list("instrument_token", flat=True) if t is not None]


# --- lookup cache ----------------------------------------------------------------------
# Metadata by token for ingestion and the OMS. Redis (or the local cache) holds it under
# a generation number that every sync bumps, so a sync invalidates everything in O(1);
# an admin change deletes its tokens' keys. A tiny in-process layer in front absorbs
# repeated lookups for LOCAL_TTL seconds. The database stays the truth.

META_FIELDS = (
    "id", "instrument_token", "tradingsymbol", "name", "exchange", "segment", "instrument_type",
    "expiry", "strike", "tick_size", "lot_size", "is_active", "stream_mode",
)  # fmt: skip
GENERATION_KEY = "instruments:meta:gen"
META_TTL = 24 * 3600
LOCAL_TTL = 2.0
_local: dict[int, tuple[float, dict[str, Any] | None]] = {}
_local_lock = threading.Lock()


def _generation() -> int:
    generation = cache.get(GENERATION_KEY)
    if generation is None:
        cache.add(GENERATION_KEY, 1, timeout=None)
        generation = cache.get(GENERATION_KEY) or 1
    return int(generation)


def _meta_key(generation: int, token: int) -> str:
    return f"instruments:meta:{generation}:{token}"


def _serialize(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "expiry": row["expiry"].isoformat() if row["expiry"] else None,
        "strike": str(row["strike"]),
        "tick_size": str(row["tick_size"]),
    }


def instruments_meta(tokens: list[int]) -> dict[int, dict[str, Any]]:
    """Metadata of listed Kite instruments by token; tokens not listed are absent."""
    now = time.monotonic()
    found: dict[int, dict[str, Any]] = {}
    missing: list[int] = []
    with _local_lock:
        for token in tokens:
            hit = _local.get(token)
            if hit is not None and now - hit[0] < LOCAL_TTL:
                if hit[1] is not None:
                    found[token] = hit[1]
            else:
                missing.append(token)
    if not missing:
        return found
    generation = _generation()
    cached = cache.get_many([_meta_key(generation, t) for t in missing])
    from_db: list[int] = []
    fresh: dict[int, dict[str, Any] | None] = {}
    for token in missing:
        value = cached.get(_meta_key(generation, token))
        if value is None:
            from_db.append(token)
        else:
            fresh[token] = value or None  # {} caches "not listed"
    if from_db:
        rows = Instrument.objects.filter(
            source=Source.KITE, is_listed=True, instrument_token__in=from_db
        ).values(*META_FIELDS)
        loaded = {row["instrument_token"]: _serialize(row) for row in rows}
        cache.set_many({_meta_key(generation, t): loaded.get(t, {}) for t in from_db}, timeout=META_TTL)
        for token in from_db:
            fresh[token] = loaded.get(token)
    with _local_lock:
        for token, value in fresh.items():
            _local[token] = (now, value)
            if value is not None:
                found[token] = value
    return found


def instrument_meta(token: int) -> dict[str, Any] | None:
    return instruments_meta([token]).get(token)


def instrument_cache_invalidate(*, tokens: list[int] | None = None) -> None:
    """Forget cached metadata: of ``tokens``, or of everything (a sync)."""
    with _local_lock:
        if tokens is None:
            _local.clear()
        else:
            for token in tokens:
                _local.pop(token, None)
    if tokens is None:
        try:
            cache.incr(GENERATION_KEY)
        except ValueError:
            cache.set(GENERATION_KEY, 2, timeout=None)
    elif tokens:
        generation = _generation()
        cache.delete_many([_meta_key(generation, t) for t in tokens])


# --- search ------------------------------------------------------------------------------
# One implementation for the API's ``?search=`` and the admin's search box: a symbol
# prefix, a name fragment, or an exact token; exact symbol/name/token matches first, then
# prefix matches, then the rest, each group in symbol order. (``NIFTY 50`` finds the index
# first, not buried among a hundred ETFs named after it.)

MAX_TOKEN = 2**63 - 1  # the column is a bigint
_LONGEST_TEXT = max(
    getattr(Instrument._meta.get_field(name), "max_length", 0) or 0 for name in ("tradingsymbol", "name")
)


def _search_token(term: str) -> int | None:
    """``term`` as an instrument token: ASCII digits within a bigint (``"²".isdigit()`` is
    true, yet ``int("²")`` fails), else None."""
    if term.isascii() and term.isdigit() and len(term) <= len(str(MAX_TOKEN)):
        value = int(term)
        return value if value <= MAX_TOKEN else None
    return None


def search_term(raw: str) -> str:
    """What a user typed, as searched: trimmed, without NUL characters (PostgreSQL
    refuses them in a query)."""
    return raw.replace("\x00", "").strip()


def instrument_search_q(term: str) -> Q:
    """The instruments ``term`` finds (see the section comment); ``term`` from ``search_term``."""
    token = _search_token(term)
    if len(term) > _LONGEST_TEXT and token is None:
        return Q(pk__in=[])  # longer than any symbol or name: nothing can match
    matches = Q(tradingsymbol__istartswith=term) | Q(name__icontains=term)
    return matches | Q(instrument_token=token) if token is not None else matches


def instrument_search_rank(term: str) -> Case:
    """0 for an exact symbol, name or token match, 1 for a symbol or name prefix, else 2."""
    exact = Q(tradingsymbol__iexact=term) | Q(name__iexact=term)
    token = _search_token(term)
    if token is not None:
        exact |= Q(instrument_token=token)
    prefix = Q(tradingsymbol__istartswith=term) | Q(name__istartswith=term)
    return Case(When(exact, then=Value(0)), When(prefix, then=Value(1)), default=Value(2),
                output_field=IntegerField())  # fmt: skip


def instruments_search(queryset: QuerySet[Instrument], *, term: str) -> QuerySet[Instrument]:
    """``queryset`` narrowed to what ``term`` finds, best matches first."""
    term = search_term(term)
    if not term:
        return queryset
    return queryset.filter(instrument_search_q(term)).order_by(
        instrument_search_rank(term), "tradingsymbol", "id"
    )


# --- stats -------------------------------------------------------------------------------


def asset_class_expression() -> Case:
    index_derivative = Q(name__in=INDEX_UNDERLYINGS)
    return Case(
        When(segment="INDICES", then=Value("index")),
        When(exchange__in=["CDS", "BCD"], then=Value("currency")),
        When(exchange__in=["MCX", "NCO"], then=Value("commodity")),
        When(exchange__in=["NSE", "BSE"], then=Value("equity_cash")),
        When(Q(instrument_type="FUT") & index_derivative, then=Value("index_futures")),
        When(Q(instrument_type__in=["CE", "PE"]) & index_derivative, then=Value("index_options")),
        When(instrument_type="FUT", then=Value("equity_futures")),
        When(instrument_type__in=["CE", "PE"], then=Value("equity_options")),
        default=Value("other"),
        output_field=CharField(),
    )


def instrument_stats() -> dict[str, Any]:
    listed = Instrument.objects.filter(is_listed=True)
    by_exchange = listed.values("exchange").annotate(
        listed=Count("id"), active=Count("id", filter=Q(is_active=True))
    )
    by_segment = listed.values("segment").annotate(
        listed=Count("id"), active=Count("id", filter=Q(is_active=True))
    )
    by_class = (
        listed.annotate(asset_class=asset_class_expression())
        .values("asset_class")
        .annotate(listed=Count("id"), active=Count("id", filter=Q(is_active=True)))
    )
    last_sync = SyncRun.objects.exclude(status=SyncRun.Status.RUNNING).order_by("-started_at").first()
    last_good = SyncRun.objects.filter(status=SyncRun.Status.OK).order_by("-started_at").first()
    totals = Instrument.objects.aggregate(
        listed=Count("id", filter=Q(is_listed=True)),
        delisted=Count("id", filter=Q(is_listed=False)),
        active=Count("id", filter=Q(is_active=True)),
    )
    return {
        **totals,
        "feed_capacity": feed_capacity(),
        "by_exchange": {r["exchange"]: {"listed": r["listed"], "active": r["active"]} for r in by_exchange},
        "by_segment": {r["segment"]: {"listed": r["listed"], "active": r["active"]} for r in by_segment},
        "by_asset_class": {
            r["asset_class"]: {"listed": r["listed"], "active": r["active"]} for r in by_class
        },
        "last_sync": _sync_summary(last_sync),
        "last_successful_sync": _sync_summary(last_good),
    }


def _sync_summary(run: SyncRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "id": run.pk,
        "source": run.source,
        "status": run.status,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "scope": run.scope,
        "rows_read": run.rows_read,
        "inserted": run.inserted,
        "updated": run.updated,
        "delisted": run.delisted,
        "rejected": run.rejected,
        "message": run.message,
    }


def last_good_sync(*, source: str, scope: str) -> SyncRun | None:
    return (
        SyncRun.objects.filter(source=source, scope=scope, status=SyncRun.Status.OK, dry_run=False)
        .order_by("-started_at")
        .first()
    )
