"""``/metrics``: who may read it, and what the database and the feed's heartbeat say in it."""

import ipaddress
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from ingestion.status import status_store
from instruments.models import SyncRun
from oms.killswitch import kill_switch_set
from oms.models import ReconciliationIssue, ReconciliationRun, Strategy
from tests.factories import InstrumentFactory
from tests.oms.helpers import place, price

pytestmark = pytest.mark.django_db


def families(response) -> dict:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def samples(family) -> dict:
    """{(name, ((label, value), ...)): value} of a parsed family."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def value(parsed: dict, name: str, **labels) -> float:
    matching = [s.value for s in parsed[name].samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, (name, labels, parsed[name].samples)
    return matching[0]


def refused_without_figures(response, status: int) -> None:
    assert response.status_code == status
    assert b"portal_" not in response.content and b"# TYPE" not in response.content


# --- access -----------------------------------------------------------------------------------


def test_loopback_only_when_neither_a_token_nor_networks_are_set(client):
    parsed = families(client.get("/metrics", REMOTE_ADDR="127.0.0.1"))
    assert {"portal_ticks_received", "portal_feed_up", "portal_metrics_family_failed"} <= set(parsed)
    assert families(client.get("/metrics", REMOTE_ADDR="::1"))
    refused_without_figures(client.get("/metrics", REMOTE_ADDR="10.1.2.3"), 403)
    assert b"METRICS_TOKEN" in client.get("/metrics", REMOTE_ADDR="10.1.2.3").content


def test_a_loopback_request_that_came_through_an_untrusted_proxy_is_refused(client, settings):
    """nginx on this host forwards the internet from 127.0.0.1: without TRUSTED_PROXY_COUNT
    its requests are not taken for local ones."""
    for header in ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED"):
        refused_without_figures(
            client.get("/metrics", REMOTE_ADDR="127.0.0.1", **{header: "203.0.113.9"}), 403
        )
    settings.TRUSTED_PROXY_COUNT = 1  # the proxy is trusted: the caller is the address it saw
    refused_without_figures(
        client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9"), 403
    )
    assert families(client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1"))


def test_token(client, settings):
    settings.METRICS_TOKEN = "metrics-token-0123456789"
    missing = client.get("/metrics", REMOTE_ADDR="127.0.0.1")  # loopback needs it too now
    refused_without_figures(missing, 401)
    assert missing["WWW-Authenticate"].startswith("Bearer")
    refused_without_figures(client.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-token-012345678"), 403)
    refused_without_figures(client.get("/metrics", HTTP_AUTHORIZATION="Token metrics-token-0123456789"), 401)
    good = client.get(
        "/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer metrics-token-0123456789"
    )
    assert "portal_ticks_received" in families(good)
    assert b"metrics-token" not in good.content


def test_allowed_networks(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    ]
    assert families(client.get("/metrics", REMOTE_ADDR="10.1.2.3"))
    assert families(client.get("/metrics", REMOTE_ADDR="2001:db8::5"))
    assert families(client.get("/metrics", REMOTE_ADDR="::ffff:10.9.9.9"))
    refused_without_figures(client.get("/metrics", REMOTE_ADDR="192.168.1.1"), 403)
    refused_without_figures(client.get("/metrics", REMOTE_ADDR="127.0.0.1"), 403)  # not listed
    # X-Forwarded-For is not believed without TRUSTED_PROXY_COUNT.
    refused_without_figures(
        client.get("/metrics", REMOTE_ADDR="192.168.1.1", HTTP_X_FORWARDED_FOR="10.1.2.3"), 403
    )
    # A token, when set too, opens it from anywhere; a network caller needs no token.
    settings.METRICS_TOKEN = "metrics-token-0123456789"
    refused_without_figures(client.get("/metrics", REMOTE_ADDR="192.168.1.1"), 401)
    assert families(client.get("/metrics", REMOTE_ADDR="10.1.2.3"))
    assert families(
        client.get(
            "/metrics", REMOTE_ADDR="192.168.1.1", HTTP_AUTHORIZATION="Bearer metrics-token-0123456789"
        )
    )


def test_only_get(client):
    assert client.post("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 405


def test_bad_networks_setting_stops_start_up_with_the_value(tmp_path):
    from tests.helpers import child_env, run_python

    result = run_python(
        "import django; django.setup()", child_env(METRICS_ALLOWED_NETWORKS="10.0.0.0/8,not-a-net")
    )
    assert result.returncode != 0
    assert "METRICS_ALLOWED_NETWORKS: 'not-a-net' is not a network" in result.stderr


# --- figures ---------------------------------------------------------------------------------


@pytest.fixture
def reliance(db):
    return InstrumentFactory(
        tradingsymbol="RELIANCE",
        instrument_token=738561,
        exchange="NSE",
        segment="NSE",
        tick_size="0.05",
        lot_size=1,
        is_active=True,
    )


@pytest.fixture
def trader(django_user_model):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(username="strategist", password="strategist-pass-123")
    user.user_permissions.add(Permission.objects.get(codename="place_order"))
    return user


def test_orders_and_risk_rejections_of_today(client, reliance, trader):
    price(reliance.instrument_token, "2500.00", bid="2499.95", ask="2500.05")
    place(reliance, user=trader, quantity=10)
    place(reliance, user=trader, quantity=5)
    Strategy.objects.filter(name="manual").update(max_order_quantity=3)
    refused = place(reliance, user=trader, quantity=4).order
    assert refused.risk_rule == "max_quantity"
    parsed = families(client.get("/metrics"))
    assert value(parsed, "portal_orders_today", strategy="manual", status="COMPLETE") == 2
    assert value(parsed, "portal_orders_today", strategy="manual", status="RISK REJECTED") == 1
    assert value(parsed, "portal_risk_rejections_today", rule="max_quantity", strategy="manual") == 1

    # Yesterday's orders are not today's.
    from oms.models import Order

    Order.objects.update(placed_at=timezone.now() - timedelta(days=2))
    parsed = families(client.get("/metrics"))
    assert (
        parsed["portal_orders_today"].samples == [] and parsed["portal_risk_rejections_today"].samples == []
    )


def test_kill_switch(client, trader):
    parsed = families(client.get("/metrics"))
    assert value(parsed, "portal_kill_switch_state", scope="desk", state="ACTIVE") == 1
    assert value(parsed, "portal_kill_switch_engaged") == 0
    kill_switch_set(state="HALTED", by=trader, reason="test")
    algo = Strategy.objects.create(name="algo-1")
    kill_switch_set(state="REDUCING", by=trader, reason="test", strategy=algo)
    parsed = families(client.get("/metrics"))
    assert value(parsed, "portal_kill_switch_state", scope="desk", state="HALTED") == 1
    assert value(parsed, "portal_kill_switch_state", scope="desk", state="ACTIVE") == 0
    assert value(parsed, "portal_kill_switch_state", scope="algo-1", state="REDUCING") == 1
    assert value(parsed, "portal_kill_switch_engaged") == 1
    assert value(parsed, "portal_kill_switch_strategies_engaged") == 1


def test_reconciliation_runs_and_open_issues(client):
    now = timezone.now()
    ok = ReconciliationRun.objects.create(
        started_at=now - timedelta(minutes=2), finished_at=now - timedelta(minutes=2), status="ok"
    )
    ReconciliationRun.objects.create(started_at=now - timedelta(days=2), status="failed")
    last = ReconciliationRun.objects.create(started_at=now, finished_at=now, status="unreachable")
    issues = [("missing_order", False), ("missing_order", False), ("quantity", False), ("x", True)]
    for number, (kind, resolved) in enumerate(issues):
        ReconciliationIssue.objects.create(
            run=ok, kind=kind, fingerprint=f"issue-{number}", resolved=resolved, created_at=now, seen_at=now
        )
    parsed = families(client.get("/metrics"))
    assert value(parsed, "portal_reconciliation_runs_today", status="ok") == 1
    assert value(parsed, "portal_reconciliation_runs_today", status="unreachable") == 1
    assert value(parsed, "portal_reconciliation_runs_today", status="failed") == 0  # two days ago
    assert value(parsed, "portal_reconciliation_last_run_status", status="unreachable") == 1
    assert value(parsed, "portal_reconciliation_last_run_timestamp_seconds") == pytest.approx(
        last.started_at.timestamp()
    )
    assert value(parsed, "portal_reconciliation_last_ok_timestamp_seconds") == pytest.approx(
        ok.finished_at.timestamp()
    )
    assert value(parsed, "portal_reconciliation_open_issues", kind="missing_order") == 2
    assert value(parsed, "portal_reconciliation_open_issues", kind="quantity") == 1
    assert "x" not in {s.labels["kind"] for s in parsed["portal_reconciliation_open_issues"].samples}


def test_last_sync_of_each_source(client):
    now = timezone.now()
    common = {"source": "kite", "input": "https://api.kite.trade/instruments"}
    good = SyncRun.objects.create(
        **common,
        started_at=now - timedelta(hours=3),
        finished_at=now - timedelta(hours=3),
        status="ok",
        duration_ms=4200,
        rows_read=90000,
        inserted=12,
        updated=300,
        unchanged=89688,
        delisted=3,
    )
    SyncRun.objects.create(
        **common,
        started_at=now - timedelta(hours=1),
        finished_at=now - timedelta(hours=1),
        status="failed",
        duration_ms=800,
        rows_read=10,
    )
    SyncRun.objects.create(**common, started_at=now, status="running")  # not finished: not "the last"
    SyncRun.objects.create(
        **common, started_at=now, finished_at=now, status="dry_run", dry_run=True, rows_read=5
    )
    parsed = families(client.get("/metrics"))
    assert value(parsed, "portal_instrument_sync_last_status", source="kite", status="failed") == 1
    assert value(parsed, "portal_instrument_sync_duration_seconds", source="kite") == 0.8
    assert value(parsed, "portal_instrument_sync_rows", source="kite", outcome="rows_read") == 10
    assert value(
        parsed, "portal_instrument_sync_last_success_timestamp_seconds", source="kite"
    ) == pytest.approx(good.finished_at.timestamp())


def test_kite_session_validity(client, settings):
    settings.KITE_API_KEY = ""
    parsed = families(client.get("/metrics"))
    assert value(parsed, "portal_kite_session_state", state="not_configured") == 1
    assert "portal_kite_session_valid" not in parsed  # the simulator: nothing to log in to
    settings.KITE_API_KEY = "kite-api-key"
    settings.KITE_ACCESS_TOKEN = ""
    settings.KITE_ACCESS_TOKEN_FILE = ""
    parsed = families(client.get("/metrics"))
    assert value(parsed, "portal_kite_session_state", state="login_needed") == 1
    assert value(parsed, "portal_kite_session_valid") == 0
    settings.KITE_ACCESS_TOKEN = "bootstrap-access-token"
    response = client.get("/metrics")
    parsed = families(response)
    assert value(parsed, "portal_kite_session_state", state="bootstrap") == 1
    assert value(parsed, "portal_kite_session_valid") == 1
    assert b"bootstrap-access-token" not in response.content and b"kite-api-key" not in response.content


def test_feed_figures_from_the_heartbeat(client):
    parsed = families(client.get("/metrics"))
    assert value(parsed, "portal_feed_up") == 0 and "portal_feed_state" not in parsed
    status_store(
        {
            "feed": "kite",
            "state": "degraded",
            "active": 12,
            "subscribed": 10,
            "capacity": 9000,
            "over_limit": 2,
            "connections": [{"state": "connected"}, {"state": "backoff"}],
            "reconnects": 7,
            "last_tick_age": 1.5,
            "failures": {"publish": 3, "store": 0},
            "updated_at": timezone.now().isoformat(),
        }
    )
    parsed = families(client.get("/metrics"))
    assert value(parsed, "portal_feed_up") == 1
    assert value(parsed, "portal_feed_state", feed="kite", state="degraded") == 1
    assert value(parsed, "portal_feed_state", feed="kite", state="connected") == 0
    assert value(parsed, "portal_feed_connections", state="connected") == 1
    assert value(parsed, "portal_feed_connections", state="backoff") == 1
    assert value(parsed, "portal_feed_reconnects") == 7  # the parser names counters without _total
    assert value(parsed, "portal_feed_subscribed_instruments") == 10
    assert value(parsed, "portal_feed_over_capacity_instruments") == 2
    assert value(parsed, "portal_feed_last_tick_age_seconds") >= 1.5
    assert value(parsed, "portal_feed_loop_failures", loop="publish") == 3


def test_a_failing_query_leaves_out_its_family_not_the_scrape(client):
    """A real fault: the issues table is gone (renamed) while Prometheus scrapes."""
    from django.db import connection

    ReconciliationRun.objects.create(started_at=timezone.now(), status="ok")
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE oms_reconciliationissue RENAME TO oms_reconciliationissue_gone")
    try:
        parsed = families(client.get("/metrics"))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE oms_reconciliationissue_gone RENAME TO oms_reconciliationissue")
    assert value(parsed, "portal_metrics_family_failed", family="reconciliation") == 1
    assert value(parsed, "portal_metrics_family_failed", family="orders") == 0
    assert "portal_reconciliation_runs_today" not in parsed  # the whole family, not half of it
    assert "portal_kill_switch_state" in parsed and "portal_instrument_sync_rows" in parsed
    parsed = families(client.get("/metrics"))
    assert value(parsed, "portal_metrics_family_failed", family="reconciliation") == 0
