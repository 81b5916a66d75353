"""The login round trip, portal -> Kite's login page -> the portal's callback -> Kite's
session endpoint, against real local fakes (``tests/fakes/kite_login.py``,
``tests/fakes/kite_rest.py``) with the Django test client for the portal; and every way the
callback is refused: forged, replayed, expired or someone else's state, a cancelled login,
Kite's refusal, Kite away, a missing setting. A refused callback changes nothing."""

import hashlib
import http.client
import logging
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.core import signing
from django.test import Client

from kitesession.models import KiteSession
from kitesession.store import access_token, session_state
from tests.fakes.kite_login import FakeKiteLogin
from tests.fakes.kite_rest import FakeKite
from tests.helpers import free_port

pytestmark = pytest.mark.django_db
CALLBACK = "http://testserver/kite/callback/"


@pytest.fixture
def kite(kite_settings):
    with FakeKite(user_id="AB1234", user_name="Desk One") as fake:
        kite_settings.KITE_API_URL = fake.url
        yield fake


@pytest.fixture
def login_page(kite, kite_settings):
    with FakeKiteLogin(kite, redirect_url=CALLBACK) as page:
        kite_settings.KITE_LOGIN_URL = page.url
        yield page


def desk_member(django_user_model, username: str = "desk", *, staff: bool = True, permission: bool = True):
    user = django_user_model.objects.create_user(username=username, password="desk-pass-123", is_staff=staff)
    if permission:
        user.user_permissions.add(Permission.objects.get(codename="login_kite"))
    return user


@pytest.fixture
def desk(client, django_user_model):
    client.force_login(desk_member(django_user_model))
    return client


def kite_redirect(url: str) -> str:
    """GET ``url`` on a fake (a real HTTP request) and return where it redirects to."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}")
        response = connection.getresponse()
        assert response.status == 302, response.read()
        return response.getheader("Location")
    finally:
        connection.close()


def start_login(client: Client) -> str:
    """/kite/login/ -> Kite's login page -> the callback URL Kite sends the browser back to."""
    response = client.get("/kite/login/")
    assert response.status_code == 302
    return kite_redirect(response["Location"])


def callback_path(url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == CALLBACK
    return f"{parts.path}?{parts.query}"


def test_the_whole_login_round_trip(desk, kite, login_page, kite_settings, caplog):
    caplog.set_level(logging.DEBUG)
    response = desk.get("/kite/login/")
    assert response.status_code == 302
    target = urlsplit(response["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == login_page.url
    query = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert (query["v"], query["api_key"]) == ("3", "kite-test-key")
    assert set(parse_qs(query["redirect_params"])) == {"state"}

    back = kite_redirect(response["Location"])
    back_query = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
    assert back_query["status"] == "success" and back_query["request_token"]
    page = desk.get(callback_path(back))
    assert page.status_code == 200
    text = page.content.decode()
    assert "AB1234 is logged in to Kite until" in text and "06:00 IST" in text

    # Kite's checksum was sent; the token Kite issued is the one the store gives, and it works.
    [exchange] = kite.sessions_issued()
    secret = kite_settings.KITE_API_SECRET
    expected = hashlib.sha256(f"kite-test-key{back_query['request_token']}{secret}".encode()).hexdigest()
    assert exchange.form["checksum"] == expected
    token = access_token()
    assert token in kite.tokens and token != kite.access_token
    from kiteconnect import KiteConnect

    assert KiteConnect("kite-test-key", access_token=token, root=kite.url).profile()["user_id"] == "AB1234"
    session = KiteSession.objects.get()
    assert (session.user_id, session.user_name, session.created_by) == ("AB1234", "Desk One", "desk")
    state = session_state()
    assert (state.state, state.user_id) == ("valid", "AB1234")

    # Never the token, the request token or the secret: not on the page, not in the logs.
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret_value in (token, back_query["request_token"], secret):
        assert secret_value not in text
        assert secret_value not in logged


def test_a_replayed_callback_is_refused_and_changes_nothing(desk, kite, login_page):
    back = callback_path(start_login(desk))
    assert desk.get(back).status_code == 200
    first = access_token()
    replay = desk.get(back)
    assert replay.status_code == 403
    assert "already completed" in replay.content.decode()
    assert KiteSession.objects.count() == 1
    assert len(kite.sessions_issued()) == 1
    assert access_token() == first


def test_a_forged_state_is_refused_before_kite_is_asked(desk, kite, login_page):
    back = start_login(desk)
    query = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
    forged = signing.dumps({"n": "made-up", "u": 1}, salt="another-salt")
    for state in (forged, query["state"][:-2] + "xx", ""):
        response = desk.get("/kite/callback/", {**query, "state": state})
        assert response.status_code == 403
    assert not kite.sessions_issued()
    assert not KiteSession.objects.exists()
    # The real state is still good afterwards (a forgery does not burn it).
    assert desk.get(callback_path(back)).status_code == 200


def test_a_callback_in_another_users_or_another_browsers_session_is_refused(
    desk, kite, login_page, django_user_model
):
    back = callback_path(start_login(desk))
    other = Client()
    other.force_login(desk_member(django_user_model, "colleague"))
    response = other.get(back)
    assert response.status_code == 403
    assert "another user" in response.content.decode()
    # The same user, another browser (another portal session): the nonce is not in it.
    same_user = Client()
    same_user.force_login(django_user_model.objects.get(username="desk"))
    response = same_user.get(back)
    assert response.status_code == 403
    assert "another browser session" in response.content.decode()
    assert not kite.sessions_issued()
    assert not KiteSession.objects.exists()


def test_an_expired_state_is_refused(desk, kite, login_page, kite_settings, monkeypatch):
    started = int(time.time()) - kite_settings.KITE_LOGIN_STATE_SECONDS - 5
    monkeypatch.setattr(signing.TimestampSigner, "timestamp", lambda self: signing.b62_encode(started))
    back = callback_path(start_login(desk))
    monkeypatch.undo()
    response = desk.get(back)
    assert response.status_code == 403
    assert "start it again" in response.content.decode()
    assert not kite.sessions_issued()


def test_a_cancelled_login_is_refused(desk, kite, login_page):
    login_page.status = "cancelled"
    response = desk.get(callback_path(start_login(desk)))
    assert response.status_code == 400
    assert "did not complete the login" in response.content.decode()
    assert not kite.sessions_issued()
    assert not KiteSession.objects.exists()


def test_kites_refusal_is_shown_and_changes_nothing(desk, kite, login_page):
    kite.fail_next("token", path="/session/token", message="Token is invalid or has expired.")
    response = desk.get(callback_path(start_login(desk)))
    assert response.status_code == 400
    assert (
        "Kite refused the login (TokenException: Token is invalid or has expired.)"
        in response.content.decode()
    )
    assert not KiteSession.objects.exists()


def test_a_wrong_api_secret_fails_kites_checksum(desk, kite, login_page, kite_settings):
    kite_settings.KITE_API_SECRET = "not-the-secret"
    response = desk.get(callback_path(start_login(desk)))
    assert response.status_code == 400
    assert "Invalid `checksum`" in response.content.decode()
    assert not KiteSession.objects.exists()


def test_kite_unreachable_is_a_502_and_changes_nothing(desk, kite, login_page, kite_settings):
    back = callback_path(start_login(desk))
    kite_settings.KITE_API_URL = f"http://127.0.0.1:{free_port()}"
    response = desk.get(back)
    assert response.status_code == 502
    assert "Kite could not be reached" in response.content.decode()
    assert not KiteSession.objects.exists()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("KITE_TOKEN_KEY", "", "KITE_TOKEN_KEY is not set"),
        ("KITE_TOKEN_KEY", "short", "KITE_TOKEN_KEY is not a Fernet key"),
        ("KITE_API_SECRET", "", "KITE_API_SECRET is not set"),
        ("KITE_API_KEY", "", "Kite is not configured"),
        ("KITE_LOGIN_URL", "javascript:alert(1)", "KITE_LOGIN_URL must be an https:// URL"),
    ],
)
def test_a_missing_setting_stops_the_login_with_a_clear_page(
    desk, kite, login_page, kite_settings, name, value, says
):
    setattr(kite_settings, name, value)
    response = desk.get("/kite/login/")
    assert response.status_code == 400
    assert says in response.content.decode()
    assert not login_page.requests


def test_a_key_missing_by_the_callback_stops_it_before_kite_is_asked(desk, kite, login_page, kite_settings):
    back = callback_path(start_login(desk))
    kite_settings.KITE_TOKEN_KEY = ""
    response = desk.get(back)
    assert response.status_code == 400
    assert "KITE_TOKEN_KEY is not set" in response.content.decode()
    assert not kite.sessions_issued()
    assert not KiteSession.objects.exists()


def test_no_request_token_is_refused(desk, kite, login_page):
    back = start_login(desk)
    query = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items() if k != "request_token"}
    response = desk.get("/kite/callback/", query)
    assert response.status_code == 400
    assert "no request token" in response.content.decode()


@pytest.mark.parametrize("path", ["/kite/login/", "/kite/callback/?state=x"])
def test_anonymous_visitors_are_sent_to_the_admin_login(client, kite_settings, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


@pytest.mark.parametrize(("staff", "permission"), [(True, False), (False, True), (False, False)])
@pytest.mark.parametrize("path", ["/kite/login/", "/kite/callback/?state=x"])
def test_only_staff_with_the_permission_may_log_in(
    client, django_user_model, kite_settings, staff, permission, path
):
    client.force_login(desk_member(django_user_model, staff=staff, permission=permission))
    response = client.get(path)
    assert response.status_code == 403
    assert "kitesession.login_kite" in response.content.decode()


def test_a_superuser_may_log_in(staff_client, kite, login_page):
    assert staff_client.get(callback_path(start_login(staff_client))).status_code == 200


def test_the_login_views_answer_get_only(desk, kite, login_page):
    assert desk.post("/kite/login/").status_code == 405
    assert desk.post("/kite/callback/").status_code == 405


def test_the_status_endpoint_never_shows_the_token(desk, kite, login_page, plain_user):
    assert desk.get(callback_path(start_login(desk))).status_code == 200
    body = desk.get("/kite/status/").json()
    assert body["state"] == "valid" and body["user_id"] == "AB1234"
    assert body["expires_at"].endswith("T06:00:00+05:30")
    assert body["login_url"] == "/kite/login/"
    assert access_token() not in str(body)
    trader = Client()
    trader.force_login(plain_user)
    assert trader.get("/kite/status/").json()["login_url"] is None


def test_a_login_as_another_kite_user_than_the_desks_is_refused(desk, kite, login_page, kite_settings):
    kite_settings.KITE_USER_ID = "ZZ9999"
    response = desk.get(callback_path(start_login(desk)))
    assert response.status_code == 403
    assert "You logged in to Kite as AB1234, but this desk trades as ZZ9999" in response.content.decode()
    assert not KiteSession.objects.exists()
    # The session Kite handed out is ended at Kite, not left alive.
    [invalidated] = kite.calls_to("DELETE", "/session/token")
    assert invalidated.query["access_token"] not in kite.tokens
    kite_settings.KITE_USER_ID = "ab1234"  # the desk's own user, any case
    assert desk.get(callback_path(start_login(desk))).status_code == 200
