"""LIVE trading against someone holding a login, and against callers racing each other: a
real web server (two uvicorn worker processes, PostgreSQL and Redis) in front of a fake
Kite REST server. A non-staff user cannot switch a strategy LIVE, read or resolve
reconciliation, read another strategy's orders or statistics, trade another strategy or
post a forged postback: every answer is a 302 to the login page, a 403 or a 404, never a
500. Concurrent API callers with one Idempotency-Key on a LIVE strategy make one order at Kite."""

import hashlib
import http.cookiejar
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from oms.models import Mode, Order, ReconciliationIssue, ReconciliationRun, Strategy, StrategyAccess
from tests.conftest import requires_redis
from tests.factories import InstrumentFactory
from tests.fakes.kite_rest import FakeKite
from tests.helpers import free_port, port_open, portal_env, running, uvicorn_argv, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, requires_redis, pytest.mark.django_db(transaction=True)]
PASSWORD = "attacker-pass-123"


class Session:
    """A browser-like session (cookies, CSRF token) or a token client, on the real server."""

    def __init__(self, port: int, *, token: str = "") -> None:
        self.base, self.token = f"http://127.0.0.1:{port}", token
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def login(self, username: str, password: str) -> "Session":
        page = self.call("GET", "/accounts/login/")[1]
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = {"username": username, "password": password, "csrfmiddlewaretoken": csrf, "next": "/"}
        status, text = self.call("POST", "/accounts/login/", form=form)
        assert status == 302, re.findall(r'class="[^"]*error[^"]*"[^>]*>(.*?)<', text, re.S) or text[-1500:]
        return self

    def csrf(self) -> str:
        return next((c.value for c in self.jar if c.name == "csrftoken"), "")

    def call(self, method: str, path: str, body: dict | None = None, *, form: dict | None = None,
             **headers: str) -> tuple[int, str]:  # fmt: skip
        data, kind = None, "application/json"
        if form is not None:
            data, kind = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
        sent = {"Content-Type": kind, "Referer": self.base + "/", "Origin": self.base, **headers}
        if self.token:
            sent["Authorization"] = f"Token {self.token}"
        elif self.csrf():
            sent["X-CSRFToken"] = self.csrf()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=sent)
        try:
            with self.opener.open(request, timeout=20) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 302 is the answer itself


def kite_settings(kite: FakeKite) -> dict[str, str]:
    return {"KITE_API_URL": kite.url, "KITE_API_KEY": kite.api_key, "KITE_API_SECRET": kite.api_secret,
            "KITE_ACCESS_TOKEN": kite.access_token, "KITE_REQUEST_TIMEOUT": "3"}  # fmt: skip


@pytest.fixture
def desk(tmp_path, django_user_model, settings):
    """The desk's data and a web server (two worker processes) in front of a fake Kite."""
    from rest_framework.authtoken.models import Token

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]  # the product's

    infy = InstrumentFactory(tradingsymbol="INFY", name="INFOSYS", instrument_token=408065, exchange="NSE",
                             segment="NSE", tick_size=Decimal("0.05"), lot_size=1, is_active=True)  # fmt: skip
    live = Strategy.objects.create(name="live-desk", mode=Mode.LIVE, capital=Decimal("10000000"))
    paper = Strategy.objects.create(name="attacker-paper", mode=Mode.PAPER, capital=Decimal("100000"))
    attacker = django_user_model.objects.create_user("attacker", password=PASSWORD)
    attacker.user_permissions.add(Permission.objects.get(codename="place_order"))
    StrategyAccess.objects.create(user=attacker, strategy=paper)
    superuser = django_user_model.objects.create_superuser("desk", password="desk-pass-123")
    now = timezone.now()
    order = Order.objects.create(
        strategy=live, instrument=infy, exchange="NSE", tradingsymbol="INFY", instrument_token=408065,
        transaction_type="BUY", quantity=10, product="MIS", order_type="LIMIT", price=Decimal("1500"), broker="kite",
        broker_order_id="261201000000999", status="OPEN", idempotency_key="desk-1", pending_quantity=10,
        placed_at=now, updated_at=now,
    )  # fmt: skip
    run = ReconciliationRun.objects.create(started_at=now, finished_at=now, status="ok")
    issue = ReconciliationIssue.objects.create(run=run, kind="order_unknown", fingerprint="order_unknown:x",
                                               exchange="NSE", tradingsymbol="INFY", broker={"order_id": "x"},
                                               created_at=now, seen_at=now)  # fmt: skip
    port = free_port()
    with FakeKite() as kite:
        kite.instrument_tokens["NSE:INFY"] = 408065
        env = portal_env(redis=True, **kite_settings(kite))
        with running(uvicorn_argv(port, workers=2), env, tmp_path / "web.log") as web:
            wait_for(lambda: port_open(port), timeout=60, what="the web server")
            yield {"port": port, "kite": kite, "web": web, "live": live, "paper": paper, "order": order, "issue": issue,
                   "attacker": attacker, "token": Token.objects.create(user=attacker).key, "infy": infy,
                   "desk_token": Token.objects.create(user=superuser).key, "log": tmp_path / "web.log"}  # fmt: skip


def test_a_non_staff_login_gets_nothing_of_the_live_desk_and_never_a_500(desk):
    port, order, issue = desk["port"], desk["order"], desk["issue"]
    browser = Session(port).login("attacker", PASSWORD)
    api = Session(port, token=desk["token"])
    answers: dict[str, int] = {}

    def answer(name: str, status: int, allowed: set[int]) -> None:
        answers[name] = status
        assert status in allowed, (name, status)

    # The LIVE switch (the admin's confirmation page): to the login page, nothing switched.
    paper = desk["paper"]
    switch = f"/admin/oms/strategy/{paper.pk}/mode/"
    answer("switch page", browser.call("GET", switch)[0], {302})
    form = {"mode": "LIVE", "confirm_name": paper.name, "note": "", "csrfmiddlewaretoken": browser.csrf()}
    answer("switch", browser.call("POST", switch, form=form)[0], {302, 403})
    answer("strategy change", browser.call("POST", f"/admin/oms/strategy/{paper.pk}/change/",
                                            form={**form, "name": paper.name})[0], {302, 403})  # fmt: skip
    paper.refresh_from_db()
    assert paper.mode == Mode.PAPER

    # Reconciliation: not readable over the API, not resolvable in the admin.
    for path in (
        "/api/reconciliation/runs/",
        "/api/reconciliation/issues/",
        "/api/reconciliation/issues/?resolved=false",
    ):
        answer(path, api.call("GET", path)[0], {403})
        answer(f"session {path}", browser.call("GET", path)[0], {403})
    resolve = {"resolution": "dismissed", "note": "nothing to see", "csrfmiddlewaretoken": browser.csrf()}
    answer("resolve", browser.call("POST", f"/admin/oms/reconciliationissue/{issue.pk}/change/", form=resolve)[0],
           {302, 403})  # fmt: skip
    dismiss = {
        "action": "dismiss_selected",
        "_selected_action": str(issue.pk),
        "csrfmiddlewaretoken": browser.csrf(),
    }
    answer("dismiss", browser.call("POST", "/admin/oms/reconciliationissue/", form=dismiss)[0], {302, 403})
    issue.refresh_from_db()
    assert not issue.resolved

    # Another strategy's orders, trades, positions and statistics: not there.
    answer("order", api.call("GET", f"/api/orders/{order.pk}/")[0], {404})
    answer("cancel", api.call("DELETE", f"/api/orders/{order.pk}/")[0], {404})
    answer("modify", api.call("PATCH", f"/api/orders/{order.pk}/", {"quantity": 1})[0], {404})
    for path in ("/api/orders/", "/api/trades/", "/api/positions/", "/api/stats/daily/"):
        status, text = api.call("GET", path)
        answer(path, status, {200})
        assert "live-desk" not in text, path
    status, _ = api.call("GET", "/api/orders/?strategy=live-desk")
    answer("orders of live-desk", status, {200, 400, 403, 404})
    if status == 200:
        assert "live-desk" not in _
    status, text = api.call("GET", "/api/stats/daily/?strategy=live-desk")
    answer("stats of live-desk", status, {200, 400, 403, 404})
    assert status != 200 or "live-desk" not in text

    # Trading the LIVE strategy: refused, nothing at Kite.
    body = {"strategy": "live-desk", "exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY",
            "quantity": 1, "product": "MIS", "order_type": "LIMIT", "price": "1500.00"}  # fmt: skip
    answer("place on live-desk", api.call("POST", "/api/orders/", body, **{"Idempotency-Key": "evil-1"})[0],
           {400, 403, 404})  # fmt: skip
    assert desk["kite"].placements() == []

    # A forged postback (a made-up checksum; one signed with a wrong secret): refused, the order unchanged.
    row = {"order_id": order.broker_order_id, "order_timestamp": "2026-12-01 10:00:00", "status": "CANCELLED",
           "exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY", "product": "MIS", "quantity": 10,
           "filled_quantity": 0}  # fmt: skip
    answer("postback, no checksum", api.call("POST", "/api/kite/postback/", row)[0], {403})
    answer(
        "postback, made up", api.call("POST", "/api/kite/postback/", {**row, "checksum": "a" * 64})[0], {403}
    )
    wrong = hashlib.sha256(f"{row['order_id']}{row['order_timestamp']}not-the-secret".encode()).hexdigest()
    forged = {**row, "checksum": wrong}
    answer("postback, wrong secret", api.call("POST", "/api/kite/postback/", forged)[0], {403})
    order.refresh_from_db()
    assert order.status == "OPEN"

    assert "Internal Server Error" not in desk["log"].read_text(errors="replace")
    assert all(status < 500 for status in answers.values()), answers


def test_concurrent_callers_with_one_idempotency_key_make_one_order_at_kite(desk):
    body = {"strategy": "live-desk", "exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY",
            "quantity": 5, "product": "MIS", "order_type": "LIMIT", "price": "1500.00"}  # fmt: skip
    start = threading.Barrier(8)
    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def caller() -> None:
        api = Session(desk["port"], token=desk["desk_token"])
        start.wait(timeout=30)
        status, text = api.call("POST", "/api/orders/", body, **{"Idempotency-Key": "race-live-1"})
        with lock:
            answers.append((status, json.loads(text)))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(answers) == 8
    assert sorted(status for status, _ in answers) == [200] * 7 + [201], answers
    assert len({answer["id"] for _, answer in answers}) == 1
    assert len(desk["kite"].placements()) == 1
    assert Order.objects.filter(idempotency_key="race-live-1").count() == 1
