"""Syncs started from the web (API, admin): what they may fetch, what they record, what
their task carries. Every fetch goes to a real local HTTP server started by the test."""

import socket

import pytest
from django.db import transaction
from django.test import override_settings
from django.urls import reverse
from django_q.brokers import get_broker
from django_q.signing import SignedPackage

from instruments.models import Instrument, SyncRun
from instruments.services import instrument_sync, instrument_sync_enqueue
from instruments.sync.errors import UrlRefused
from instruments.sync.policy import FetchGuard
from instruments.tasks import sync_instruments_task
from tests.instruments.dumps import kite_csv, nifty_universe
from tests.instruments.fake_http import Route, fake_server

pytestmark = pytest.mark.django_db
SYNC = "/api/instruments/sync/"
DUMP = kite_csv(nifty_universe())


@pytest.fixture
def broker():
    broker = get_broker()
    broker.purge_queue()
    yield broker
    broker.purge_queue()


def take_queued(broker) -> list[dict]:
    """The tasks waiting in the queue, taken off it as a worker would."""
    tasks = []
    for _ in range(broker.queue_size()):
        for ack_id, package in broker.dequeue() or []:
            tasks.append(SignedPackage.loads(package))
            broker.acknowledge(ack_id)
    return tasks


def run_queued(broker) -> list[dict]:
    """Run every queued task's function as the worker would; their results."""
    from importlib import import_module

    results = []
    for task in take_queued(broker):
        module, name = task["func"].rsplit(".", 1)
        results.append(getattr(import_module(module), name)(*task["args"], **task["kwargs"]))
    return results


def post_sync(client, **payload):
    return client.post(SYNC, {"source": "kite", **payload}, content_type="application/json")


@pytest.fixture
def dump_host():
    """A dump server configured as KITE_INSTRUMENTS_URL (an allowed host, even on loopback)."""
    with (
        fake_server({"/instruments": DUMP}) as server,
        override_settings(KITE_INSTRUMENTS_URL=server.url("/instruments")),
    ):
        yield server


# --- refused when requested -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:6379/", "127.0.0.1:6379 is not an allowed dump host"),
        ("http://localhost:8630/healthz", "localhost:8630 is not an allowed dump host"),
        ("http://[::1]:5432/", "::1:5432 is not an allowed dump host"),
        ("http://10.0.0.5/instruments", "10.0.0.5:80 is not an allowed dump host"),
        ("http://192.168.1.1/", "192.168.1.1:80 is not an allowed dump host"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254:80 is not an allowed dump host"),
        ("https://internal.example/instruments", "internal.example:443 is not an allowed dump host"),
        ("ftp://api.kite.trade/instruments", "only http and https"),
        ("https://user:secret@api.kite.trade/instruments", "carries credentials"),
        ("https://api.kite.trade/instruments?access_token=abc123", "looks like a credential (access_token)"),
        ("https://api.kite.trade/instruments?api_key=k&x=1", "looks like a credential (api_key)"),
    ],
)
def test_a_url_the_web_may_not_fetch_is_a_400_with_the_reason(staff_client, broker, url, reason):
    with override_settings(KITE_INSTRUMENTS_URL="https://api.kite.trade/instruments"):
        response = post_sync(staff_client, url=url)
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert broker.queue_size() == 0
    assert not SyncRun.objects.exists()


def test_a_refusal_says_what_is_allowed_and_how_to_allow_more(staff_client, broker):
    with override_settings(KITE_INSTRUMENTS_URL="https://api.kite.trade/instruments",
                           UPSTOX_INSTRUMENTS_URL="https://assets.upstox.com/x.json.gz",
                           SYNC_ALLOWED_HOSTS=["mirror.desk.lan"]):  # fmt: skip
        detail = post_sync(staff_client, url="http://127.0.0.1:8000/").json()["detail"]
    assert "allowed: api.kite.trade:443, assets.upstox.com:443, mirror.desk.lan" in detail
    assert "SYNC_ALLOWED_HOSTS" in detail


def local_host_name() -> str:
    """This machine's name, when it resolves to loopback only (as /etc/hosts makes it on
    Debian and in containers): a name, not an IP literal or ``localhost``."""
    name = socket.gethostname()
    addresses = {info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    if not addresses or not all(a.startswith("127.") for a in addresses):
        pytest.skip(f"{name} resolves to {addresses}, not to loopback only")
    return name


def test_a_configured_host_name_resolving_to_a_private_address_is_refused(staff_client, broker):
    """A dump host configured by name (not an IP literal or localhost) must resolve to
    public addresses; only SYNC_ALLOWED_HOSTS may name local or private servers."""
    name = local_host_name()
    with fake_server({"/instruments": DUMP}) as server:
        by_name = f"http://{name}:{server.port}/instruments"
        with override_settings(KITE_INSTRUMENTS_URL=by_name):
            for payload in ({"url": by_name}, {}):  # given, or the configured URL
                response = post_sync(staff_client, **payload)
                assert response.status_code == 400
                assert f"{name} resolves to a loopback address (127." in response.json()["detail"]
        with override_settings(KITE_INSTRUMENTS_URL=by_name, SYNC_ALLOWED_HOSTS=[name]):
            assert post_sync(staff_client, url=by_name).status_code == 202, "listed: local addresses allowed"
        assert server.seen == []  # nothing was fetched at request time


def test_the_admin_form_shows_the_refusal(staff_client, broker):
    response = staff_client.post(
        reverse("admin:instruments_syncrun_start"), {"source": "kite", "url": "http://127.0.0.1:6379/"}
    )
    assert response.status_code == 200
    assert "127.0.0.1:6379 is not an allowed dump host" in response.content.decode()
    assert broker.queue_size() == 0


# --- queued and run ---------------------------------------------------------------------------


def test_an_allowed_local_dump_host_works_end_to_end(
    staff_client, broker, dump_host, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_sync(staff_client, url=dump_host.url("/instruments"), filter="nifty")
    assert response.status_code == 202 and response.json()["task_name"] == "sync kite by operator"
    (result,) = run_queued(broker)
    assert result["status"] == "ok" and result["inserted"] == len(nifty_universe())
    run = SyncRun.objects.get()
    assert run.triggered_by == "user:operator" and run.preset == "nifty" and run.status == "ok"
    assert Instrument.objects.count() == len(nifty_universe())


def test_sync_allowed_hosts_admits_a_mirror(staff_client, broker, django_capture_on_commit_callbacks):
    with (
        fake_server({"/dump.csv": DUMP}) as mirror,
        override_settings(SYNC_ALLOWED_HOSTS=[f"127.0.0.1:{mirror.port}"]),
    ):
        with django_capture_on_commit_callbacks(execute=True):
            assert post_sync(staff_client, url=mirror.url("/dump.csv")).status_code == 202
        (result,) = run_queued(broker)
    assert result["status"] == "ok"
    with override_settings(SYNC_ALLOWED_HOSTS=["127.0.0.1:1"]):  # another port of the same host
        assert post_sync(staff_client, url=mirror.url("/dump.csv")).status_code == 400


def test_the_task_carries_no_credentials_and_reads_them_itself(staff_client, broker, dump_host,
                                                               django_capture_on_commit_callbacks):  # fmt: skip
    with override_settings(KITE_API_KEY="key-abc-123", KITE_ACCESS_TOKEN="token-def-456"):
        with django_capture_on_commit_callbacks(execute=True):
            post_sync(staff_client)
        (task,) = take_queued(broker)
        assert "key-abc-123" not in repr(task) and "token-def-456" not in repr(task)
        assert task["kwargs"]["from_web"] is True
        sync_instruments_task(**task["kwargs"])
    assert dump_host.seen[0].headers["Authorization"] == "token key-abc-123:token-def-456"


def test_enqueueing_waits_for_the_commit(broker):
    with transaction.atomic():
        queued = instrument_sync_enqueue(source="kite", by="operator")
        assert broker.queue_size() == 0 and queued.task_id is None
        transaction.set_rollback(True)
    assert broker.queue_size() == 0  # rolled back: never queued


# --- checked again at fetch time ---------------------------------------------------------------


def test_the_worker_checks_the_url_again_before_fetching(dump_host):
    with fake_server({"/": b"internal"}) as internal:
        result = sync_instruments_task(
            source="kite", url=internal.url("/"), triggered_by="user:x", from_web=True
        )
    assert result["status"] == "refused" and "is not an allowed dump host" in result["message"]
    assert internal.seen == []
    run = SyncRun.objects.get()
    assert run.status == "refused" and "is not an allowed dump host" in run.message


def test_a_redirect_from_an_allowed_host_to_a_disallowed_address_is_refused(dump_host):
    with fake_server({"/secret": DUMP}) as internal:
        dump_host.routes["/moved"] = Route(status=302, headers={"Location": internal.url("/secret")})
        result = sync_instruments_task(source="kite", url=dump_host.url("/moved"), from_web=True)
        assert result["status"] == "refused"
        assert f"127.0.0.1:{internal.port} is not an allowed dump host" in result["message"]
        assert internal.seen == []  # the redirect was never followed
        # The command line is not restricted: the same redirect is followed.
        assert instrument_sync(source="kite", url=dump_host.url("/moved")).status == "ok"
        assert internal.paths() == ["/secret"]
    for link_local in ("http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/"):
        dump_host.routes["/moved"] = Route(status=301, headers={"Location": link_local})
        result = sync_instruments_task(source="kite", url=dump_host.url("/moved"), from_web=True)
        assert result["status"] == "refused" and "is not an allowed dump host" in result["message"]


def test_the_address_the_connection_reached_is_checked(dump_host):
    """DNS rebinding: a host name that passed the check (public the first time) but whose
    connection reaches a private address gets nothing, not even the request."""
    name = local_host_name()
    by_name = f"http://{name}:{dump_host.port}/instruments"
    with override_settings(KITE_INSTRUMENTS_URL=by_name):
        guard = FetchGuard()
        with (
            pytest.raises(UrlRefused, match=f"{name} resolves to a loopback address"),
            guard.session() as session,
        ):
            session.get(by_name, timeout=10)  # as if ``guard.url`` had seen a public address
    assert dump_host.seen == []


def test_a_web_sync_never_echoes_what_the_url_returned(dump_host):
    dump_host.routes["/page"] = Route(b"status,database_password\nok,hunter2-secret\n")
    sync_instruments_task(source="kite", url=dump_host.url("/page"), from_web=True)
    run = SyncRun.objects.get()
    assert run.status == "failed" and "the header lacks instrument_token" in run.message
    assert "hunter2" not in run.message and "database_password" not in run.message
    # From a shell the header is shown, to help whoever is fixing the dump.
    with pytest.raises(Exception, match="database_password"):
        instrument_sync(source="kite", url=dump_host.url("/page"))


def test_a_web_sync_reads_no_file_of_the_server():
    from instruments.sync.errors import BadInput

    with pytest.raises(BadInput, match="never a file"):
        instrument_sync(source="kite", path="/etc/passwd", from_web=True)
    assert not SyncRun.objects.exists()
