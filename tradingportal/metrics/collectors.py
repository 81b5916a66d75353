"""What ``/metrics`` reads when Prometheus scrapes, besides the processes' own counters.

- The feed, from the heartbeat the ingestion writes to the cache every second
  (``ingestion.status.feed_status()``): whether it runs, its state, connections by state,
  reconnects, subscribed instruments, the age of the last tick.
- The database: today's orders by strategy and status, risk rejections by rule, the kill
  switch, reconciliation runs and open issues, the last sync of each source. Each family
  is its own small query with a time limit (``METRICS_QUERY_TIMEOUT``, PostgreSQL's
  ``statement_timeout``); one that fails is left out (and named in
  ``portal_metrics_family_failed``), never the whole scrape. A database that cannot be
  reached at all is tried once per scrape, not once per family.
- The Kite session (``kitesession.store.session_state()``).

In multiprocess mode, gauges of processes that have ended are removed here before the
files are read (prometheus-client's ``mark_process_dead``), so a web worker that crashed
or was restarted stops counting its sockets.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from tradingportal.logging import RepeatedFailure
from tradingportal.metrics import MULTIPROCESS_DIR

logger = logging.getLogger(__name__)
IST = ZoneInfo("Asia/Kolkata")

FEED_STATES = ("connected", "degraded", "disconnected", "auth_failed", "config_error", "idle", "stopped")
CONNECTION_STATES = (
    "connected",
    "connecting",
    "backoff",
    "disconnected",
    "auth_failed",
    "config_error",
    "idle",
)
KILL_SWITCH_STATES = ("ACTIVE", "REDUCING", "HALTED")
SYNC_ROWS = ("rows_read", "inserted", "updated", "unchanged", "delisted", "relisted", "rejected")
KITE_SESSION_STATES = ("valid", "bootstrap", "login_needed", "not_configured")

Family = Callable[[], Iterable[Metric]]


def _gauge(name: str, documentation: str, value: float | None) -> Iterator[GaugeMetricFamily]:
    if value is not None:
        yield GaugeMetricFamily(name, documentation, value=value)


def _timestamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _today_start() -> datetime:
    """Midnight IST today: "today" for orders, rejections and reconciliation runs."""
    return datetime.combine(timezone.localtime(timezone.now(), IST).date(), datetime.min.time(), tzinfo=IST)


# --- the feed's heartbeat --------------------------------------------------------------------


def feed_families() -> Iterator[Metric]:
    from ingestion.status import feed_status

    status = feed_status()
    running = bool(status and status.get("running"))
    yield from _gauge(
        "portal_feed_up", "1 while the ingestion's heartbeat is fresh (the feed runs).", int(running)
    )
    if not status:
        return
    yield from _gauge(
        "portal_feed_heartbeat_age_seconds",
        "Seconds since the ingestion's last heartbeat.",
        status.get("heartbeat_age"),
    )
    if not running:
        return  # the rest would describe a feed that no longer runs
    state = GaugeMetricFamily(
        "portal_feed_state",
        "The feed's state (1: the current one) and which feed it is (kite, simulator).",
        labels=["feed", "state"],
    )
    for name in {*FEED_STATES, status["state"]}:
        state.add_metric([status.get("feed", ""), name], int(name == status["state"]))
    yield state
    connections = GaugeMetricFamily(
        "portal_feed_connections", "Ticker connections by state.", labels=["state"]
    )
    counts = dict.fromkeys(CONNECTION_STATES, 0)
    for item in status.get("connections", []):
        counts[item["state"]] = counts.get(item["state"], 0) + 1
    for name, count in counts.items():
        connections.add_metric([name], count)
    yield connections
    yield CounterMetricFamily(
        "portal_feed_reconnects",
        "Ticker reconnects since the ingestion started.",
        value=status.get("reconnects", 0),
    )
    yield from _gauge(
        "portal_feed_subscribed_instruments",
        "Instruments the ticker connections are subscribed to.",
        status.get("subscribed"),
    )
    yield from _gauge(
        "portal_feed_active_instruments",
        "Active, listed instruments (what should stream).",
        status.get("active"),
    )
    yield from _gauge(
        "portal_feed_capacity_instruments", "Instruments the feed can stream.", status.get("capacity")
    )
    yield from _gauge(
        "portal_feed_over_capacity_instruments",
        "Active instruments left out: over the feed's capacity.",
        status.get("over_limit"),
    )
    age = status.get("last_tick_age")
    if age is not None:  # none before the first tick
        age = age + (status.get("heartbeat_age") or 0)
    yield from _gauge(
        "portal_feed_last_tick_age_seconds", "Seconds since the feed last received a tick.", age
    )
    failures = CounterMetricFamily(
        "portal_feed_loop_failures", "Failures of the ingestion's loops since it started.", labels=["loop"]
    )
    for loop, count in sorted(status.get("failures", {}).items()):
        failures.add_metric([loop], count)
    yield failures


# --- the database ----------------------------------------------------------------------------


@contextlib.contextmanager
def _bounded() -> Iterator[None]:
    """A read that may take at most METRICS_QUERY_TIMEOUT (PostgreSQL cancels it); in its
    own transaction, so a failure leaves the connection usable."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SET LOCAL statement_timeout = %s", [int(settings.METRICS_QUERY_TIMEOUT * 1000)]
                )
        yield


def orders_families() -> Iterator[Metric]:
    from oms.models import Order

    since = _today_start()
    orders = GaugeMetricFamily(
        "portal_orders_today",
        "Orders placed today (IST) by strategy and current status.",
        labels=["strategy", "status"],
    )
    rows = (
        Order.objects.filter(placed_at__gte=since)
        .values_list("strategy__name", "status")
        .annotate(n=Count("id"))
    )
    for strategy, status, count in rows.order_by():
        orders.add_metric([strategy, status], count)
    yield orders
    rejections = GaugeMetricFamily(
        "portal_risk_rejections_today",
        "Orders refused today (IST) by one of our rules, by rule and strategy.",
        labels=["rule", "strategy"],
    )
    refused = (
        Order.objects.filter(placed_at__gte=since)
        .exclude(risk_rule="")
        .values_list("risk_rule", "strategy__name")
        .annotate(n=Count("id"))
    )
    for rule, strategy, count in refused.order_by():
        rejections.add_metric([rule, strategy], count)
    yield rejections


def kill_switch_families() -> Iterator[Metric]:
    from oms.killswitch import kill_switch_status

    status = kill_switch_status()
    state = GaugeMetricFamily(
        "portal_kill_switch_state",
        'The kill switch (1: the current state): scope "desk", or a strategy whose own switch is engaged.',
        labels=["scope", "state"],
    )
    for name in KILL_SWITCH_STATES:
        state.add_metric(["desk", name], int(status["state"] == name))
    for own in status["strategies"]:
        for name in KILL_SWITCH_STATES:
            state.add_metric([own["strategy"], name], int(own["state"] == name))
    yield state
    yield from _gauge(
        "portal_kill_switch_engaged",
        "1 while the desk-wide kill switch is engaged (not ACTIVE).",
        int(status["engaged"]),
    )
    yield from _gauge(
        "portal_kill_switch_strategies_engaged",
        "Strategies whose own kill switch is engaged.",
        len(status["strategies"]),
    )


def reconciliation_families() -> Iterator[Metric]:
    from oms.models import ReconciliationIssue, ReconciliationRun

    runs = GaugeMetricFamily(
        "portal_reconciliation_runs_today",
        "Reconciliation runs started today (IST) by status.",
        labels=["status"],
    )
    counts = dict.fromkeys(ReconciliationRun.Status.values, 0)
    today = ReconciliationRun.objects.filter(started_at__gte=_today_start())
    for status, count in today.values_list("status").annotate(n=Count("id")).order_by():
        counts[status] = count
    for status, count in counts.items():
        runs.add_metric([status], count)
    yield runs
    last = (
        ReconciliationRun.objects.order_by("-started_at", "-id")
        .values("started_at", "finished_at", "status")
        .first()
    )
    if last is not None:
        yield from _gauge(
            "portal_reconciliation_last_run_timestamp_seconds",
            "When the last reconciliation run started.",
            _timestamp(last["started_at"]),
        )
        last_status = GaugeMetricFamily(
            "portal_reconciliation_last_run_status", "The last run's status (1).", labels=["status"]
        )
        for name in ReconciliationRun.Status.values:
            last_status.add_metric([name], int(last["status"] == name))
        yield last_status
    last_ok = (
        ReconciliationRun.objects.filter(status=ReconciliationRun.Status.OK)
        .order_by("-started_at")
        .values_list("finished_at", flat=True)
        .first()
    )
    yield from _gauge(
        "portal_reconciliation_last_ok_timestamp_seconds",
        "When the last successful run finished.",
        _timestamp(last_ok),
    )
    issues = GaugeMetricFamily(
        "portal_reconciliation_open_issues",
        "Differences with the broker waiting for a person, by kind.",
        labels=["kind"],
    )
    for kind, count in (
        ReconciliationIssue.objects.filter(resolved=False)
        .values_list("kind")
        .annotate(n=Count("id"))
        .order_by()
    ):
        issues.add_metric([kind], count)
    yield issues


def sync_families() -> Iterator[Metric]:
    from instruments.models import Source, SyncRun

    duration = GaugeMetricFamily(
        "portal_instrument_sync_duration_seconds",
        "How long the last finished sync of each source took.",
        labels=["source"],
    )
    rows = GaugeMetricFamily(
        "portal_instrument_sync_rows",
        "Rows of the last finished sync of each source, by outcome.",
        labels=["source", "outcome"],
    )
    status = GaugeMetricFamily(
        "portal_instrument_sync_last_status",
        "The status of the last finished sync of each source (1).",
        labels=["source", "status"],
    )
    success = GaugeMetricFamily(
        "portal_instrument_sync_last_success_timestamp_seconds",
        "When the last sync of each source that wrote the instrument master (not a dry run) finished.",
        labels=["source"],
    )
    finished = SyncRun.objects.exclude(status=SyncRun.Status.RUNNING).filter(dry_run=False)
    for source in Source.values:
        last = (
            finished.filter(source=source)
            .order_by("-started_at", "-id")
            .values("status", "duration_ms", *SYNC_ROWS)
            .first()
        )
        if last is not None:
            if last["duration_ms"] is not None:
                duration.add_metric([source], last["duration_ms"] / 1000)
            for outcome in SYNC_ROWS:
                rows.add_metric([source, outcome], last[outcome])
            for name in SyncRun.Status.values:
                if name != SyncRun.Status.RUNNING:
                    status.add_metric([source, name], int(last["status"] == name))
        ok = (
            finished.filter(source=source, status=SyncRun.Status.OK)
            .order_by("-started_at")
            .values_list("finished_at", flat=True)
            .first()
        )
        if ok is not None:
            success.add_metric([source], ok.timestamp())
    yield from (duration, rows, status, success)


def kite_session_families() -> Iterator[Metric]:
    if not apps.is_installed("kitesession"):
        return
    from kitesession.store import session_state

    session = session_state()
    state = GaugeMetricFamily(
        "portal_kite_session_state",
        "The Kite session (1: the current state): valid (a login at the portal), bootstrap "
        "(KITE_ACCESS_TOKEN), login_needed, not_configured (no KITE_API_KEY).",
        labels=["state"],
    )
    for name in {*KITE_SESSION_STATES, session.state}:
        state.add_metric([name], int(session.state == name))
    yield state
    if session.state != "not_configured":
        usable = session.state in ("valid", "bootstrap")
        yield from _gauge(
            "portal_kite_session_valid",
            "1 while a Kite access token is usable; 0: log in to Kite.",
            int(usable),
        )
    yield from _gauge(
        "portal_kite_session_expires_timestamp_seconds",
        "When the stored Kite session expires.",
        _timestamp(session.expires_at),
    )


DATABASE_FAMILIES: dict[str, Family] = {
    "orders": orders_families,
    "kill_switch": kill_switch_families,
    "reconciliation": reconciliation_families,
    "sync": sync_families,
    "kite_session": kite_session_families,
}


# --- the processes' own counters ----------------------------------------------------------------

_PID_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def forget_dead_processes(path: str) -> None:
    """Drop the live gauges (open sockets) of processes that have ended: prometheus-client
    leaves that to the application, and a web worker that crashed cannot do it itself."""
    pids = set()
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _PID_FILE.match(os.path.basename(file))
        if match:
            pids.add(int(match.group(1)))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, path)
        except PermissionError:
            pass  # alive, someone else's


class _OwnProcess:
    """This process's metrics (no multiprocess directory): prometheus-client's registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class Scrape:
    """Everything ``/metrics`` serves, collected afresh on each scrape."""

    def __init__(self, *, multiprocess_dir: str = MULTIPROCESS_DIR) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.failed: list[str] = []

    def collect(self) -> Iterator[Metric]:
        self.failed = []
        yield from self._family("processes", self._processes)
        yield from self._family("feed", feed_families)
        # At most about twice METRICS_QUERY_TIMEOUT in all: a database that cannot be reached,
        # or that is already that slow, is not asked for the remaining families.
        give_up_at = time.monotonic() + settings.METRICS_QUERY_TIMEOUT
        database_down = False
        for name, family in DATABASE_FAMILIES.items():
            if database_down or time.monotonic() > give_up_at:
                self._failure(name, TimeoutError("skipped: the database did not answer in time"))
                continue
            try:
                with _bounded():
                    metrics = list(family())
            except Exception as exc:  # noqa: BLE001 - this family is left out, the scrape goes on
                self._failure(name, exc)
                database_down = connection.connection is None or not connection.is_usable()
                continue
            _failures(name).succeeded()
            yield from metrics
        failed = GaugeMetricFamily(
            "portal_metrics_family_failed",
            "1 when this scrape left a family of figures out (its query failed).",
            labels=["family"],
        )
        for name in ("processes", "feed", *DATABASE_FAMILIES):
            failed.add_metric([name], int(name in self.failed))
        yield failed

    def _processes(self) -> Iterable[Metric]:
        """The counters and gauges of every portal process (multiprocess mode), else this one's."""
        if not self.multiprocess_dir:
            return _OwnProcess().collect()
        forget_dead_processes(self.multiprocess_dir)
        return MultiProcessCollector(None, path=self.multiprocess_dir).collect()

    def _family(self, name: str, family: Family) -> Iterator[Metric]:
        try:
            metrics = list(family())
        except Exception as exc:  # noqa: BLE001 - this family is left out, the scrape goes on
            self._failure(name, exc)
            return
        _failures(name).succeeded()
        yield from metrics

    def _failure(self, name: str, exc: BaseException) -> None:
        self.failed.append(name)
        _failures(name).failed(exc)


_family_failures: dict[str, RepeatedFailure] = {}


def _failures(name: str) -> RepeatedFailure:
    """One traceback per family, then a count at most once a minute (a scrape every 15 s)."""
    if name not in _family_failures:
        _family_failures[name] = RepeatedFailure(logger, f"reading the {name} figures for /metrics")
    return _family_failures[name]
