"""``deploy/grafana-dashboard.json`` reads metrics that ``/metrics`` really exports."""

import json
import re
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from ingestion.status import status_store
from instruments.models import SyncRun
from oms.models import ReconciliationIssue, ReconciliationRun
from tests.helpers import BASE_DIR

pytestmark = pytest.mark.django_db
DASHBOARD = BASE_DIR / "deploy" / "grafana-dashboard.json"
PROMQL_WORDS = {
    "by",
    "without",
    "or",
    "and",
    "unless",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "vector",
    "time",
    "inf",
    "nan",
}
# What the issue asks the dashboard to show.
REQUIRED = {
    "portal_ticks_received_total",
    "portal_ticks_published_total",
    "portal_feed_subscribed_instruments",
    "portal_feed_connections",
    "portal_feed_reconnects_total",
    "portal_feed_last_tick_age_seconds",
    "portal_websocket_clients",
    "portal_channel_layer_batches_total",
    "portal_orders_today",
    "portal_risk_rejections_today",
    "portal_kill_switch_engaged",
    "portal_reconciliation_runs_today",
    "portal_reconciliation_open_issues",
    "portal_instrument_sync_duration_seconds",
    "portal_instrument_sync_rows",
    "portal_kite_session_valid",
}


def expressions(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in expressions(value)]
    if isinstance(node, list):
        return [e for item in node for e in expressions(item)]
    return []


def metric_names(expr: str) -> set[str]:
    """The series an expression reads: identifiers that are not functions, keywords, label
    matchers, grouping labels or ranges."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    words = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text)
    return {word for word, call in words if not call and word not in PROMQL_WORDS}


@pytest.fixture
def every_family(client, settings):
    """A portal with something in every family: a feed, runs, issues, a sync, a Kite session."""
    from kitesession.store import session_save

    now = timezone.now()
    status_store(
        {
            "feed": "kite",
            "state": "connected",
            "active": 1,
            "subscribed": 1,
            "capacity": 9000,
            "over_limit": 0,
            "connections": [{"state": "connected"}],
            "reconnects": 0,
            "last_tick_age": 0.2,
            "failures": {"publish": 0},
            "updated_at": now.isoformat(),
        }
    )
    run = ReconciliationRun.objects.create(started_at=now, finished_at=now, status="ok")
    ReconciliationIssue.objects.create(
        run=run, kind="missing_order", fingerprint="f1", created_at=now, seen_at=now
    )
    SyncRun.objects.create(
        source="kite",
        input="x",
        started_at=now - timedelta(minutes=1),
        finished_at=now,
        status="ok",
        duration_ms=1000,
        rows_read=3,
    )
    settings.KITE_API_KEY = "kite-api-key"
    settings.KITE_TOKEN_KEY = Fernet.generate_key().decode()
    session_save(access_token="access-token-0123456789", user_id="AB1234", actor="test")
    text = client.get("/metrics").content.decode()
    names = set()
    for family in text_string_to_metric_families(text):  # a family without samples yet is exported too
        names |= {family.name + ("_total" if family.type == "counter" else "")}
        names |= {sample.name for sample in family.samples}
    return names


def test_the_dashboard_is_json_and_every_expression_reads_exported_metrics(every_family):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    exprs = expressions(dashboard["panels"])
    assert len(exprs) >= 20
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"{expr!r} reads no metric"
        missing = names - every_family
        assert not missing, f"{expr!r} reads {sorted(missing)}, which /metrics does not export"
        used |= names
    assert used >= REQUIRED, sorted(REQUIRED - used)


def test_the_expression_reader_sees_what_a_typo_would_break():
    assert metric_names('sum by (rule) (portal_risk_rejections_today{rule="x"})') == {
        "portal_risk_rejections_today"
    }
    assert metric_names("rate(portal_ticks_recieved_total[1m])") == {"portal_ticks_recieved_total"}
    assert metric_names("time() - portal_reconciliation_last_ok_timestamp_seconds") == {
        "portal_reconciliation_last_ok_timestamp_seconds"
    }
