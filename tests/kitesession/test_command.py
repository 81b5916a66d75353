"""``manage.py kite_session``: state, user, expiry and validity (never the token), --json,
the documented exit codes, and --logout at Kite and here (here even when Kite is away)."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from kitesession.models import KiteSession
from kitesession.store import access_token, session_save
from tests.fakes.kite_rest import FakeKite
from tests.helpers import free_port

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("kite_session", *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue()
    return 0, out.getvalue()


@pytest.fixture
def kite(kite_settings):
    with FakeKite() as fake:
        kite_settings.KITE_API_URL = fake.url
        yield fake


def test_a_valid_session_is_shown_without_its_token_and_exits_0(kite_settings):
    session_save(access_token="stored-secret-token", user_id="AB1234", actor="test")
    code, out = run()
    assert code == 0
    assert "state:   valid" in out and "user:    AB1234" in out and "valid:   yes" in out
    assert "06:00 IST" in out
    assert "stored-secret-token" not in out
    code, out = run("--json")
    body = json.loads(out)
    assert code == 0
    assert (body["state"], body["user_id"], body["valid"], body["usable"]) == ("valid", "AB1234", True, True)
    assert body["expires_at"].endswith("T06:00:00+05:30")
    assert "stored-secret-token" not in out


def test_login_needed_exits_3(kite_settings):
    code, out = run()
    assert code == 3
    assert "state:   login_needed" in out and "valid:   no" in out
    code, out = run("--json")
    assert code == 3
    assert json.loads(out)["state"] == "login_needed"


def test_the_bootstrap_token_exits_0_but_is_not_valid(kite_settings):
    kite_settings.KITE_ACCESS_TOKEN = "bootstrap-token"
    code, out = run("--json")
    body = json.loads(out)
    assert code == 0
    assert (body["state"], body["valid"], body["usable"]) == ("bootstrap", False, True)
    assert "bootstrap-token" not in out


def test_not_configured_exits_4(kite_settings):
    kite_settings.KITE_API_KEY = ""
    assert run()[0] == 4


def test_logout_invalidates_at_kite_and_here(kite, kite_settings):
    token = kite.issue_request_token()
    from kiteconnect import KiteConnect

    data = KiteConnect("kite-test-key", root=kite.url).generate_session(token, api_secret="kite-test-secret")
    session_save(access_token=data["access_token"], user_id=data["user_id"], actor="test")
    assert data["access_token"] in kite.tokens
    code, out = run("--logout")
    assert code == 3
    assert "Logged out XX0000 at Kite and here." in out
    assert data["access_token"] not in kite.tokens
    assert [c.query["access_token"] for c in kite.calls_to("DELETE", "/session/token")] == [
        data["access_token"]
    ]
    assert KiteSession.objects.get().logged_out_at is not None
    assert access_token() == ""
    code, out = run("--logout")
    assert "nothing to log out" in out


def test_logout_marks_here_when_kite_cannot_be_reached(kite_settings):
    kite_settings.KITE_API_URL = f"http://127.0.0.1:{free_port()}"
    session_save(access_token="stored-secret-token", user_id="AB1234", actor="test")
    code, out = run("--logout", "--json")
    body = json.loads(out)
    assert code == 3
    assert body["logout"]["logged_out"] is True and body["logout"]["at_kite"] is False
    assert "Kite could not invalidate it" in body["logout"]["detail"]
    assert "may still work at Kite until 06:00 IST" in body["logout"]["detail"]
    assert "stored-secret-token" not in out
    assert KiteSession.objects.get().logged_out_at is not None


def test_logout_without_the_key_marks_here_and_says_why(kite_settings, kite):
    session_save(access_token="stored-secret-token", user_id="AB1234", actor="test")
    kite_settings.KITE_TOKEN_KEY = ""
    code, out = run("--logout")
    assert "not invalidated at Kite: KITE_TOKEN_KEY is not set" in out
    assert not kite.calls_to("DELETE")
    assert KiteSession.objects.get().logged_out_at is not None


def test_the_help_documents_the_exit_codes():
    from kitesession.management.commands.kite_session import Command

    assert "3 Kite login needed" in Command.help and "0 a usable token" in Command.help
