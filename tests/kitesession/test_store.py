"""The session store: precedence (a valid stored session beats the bootstrap), expiry at the
next 06:00 IST, refusals remembered once (the bootstrap by fingerprint), encryption at rest,
the key checked when used, the version, and PostgreSQL's notification on commit."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cryptography.fernet import Fernet
from django.db import connection, transaction

from alerts.models import Alert, Kind
from kitesession import store
from kitesession.crypto import TokenKeyError, token_fingerprint
from kitesession.models import KiteSession, RefusedToken
from kitesession.store import (
    SESSION_CHANNEL,
    access_token,
    session_expiry,
    session_logged_out,
    session_save,
    session_state,
    session_version,
    token_refused,
)
from tests.helpers import wait_for
from tradingportal.security import redact

pytestmark = pytest.mark.django_db
IST = ZoneInfo("Asia/Kolkata")
MORNING = datetime(2026, 12, 1, 9, 0, tzinfo=IST)


def save(token: str = "stored-token-1", *, now: datetime = MORNING, user: str = "AB1234") -> None:
    session_save(access_token=token, user_id=user, actor="operator", user_name="Desk One", now=now)


@pytest.mark.parametrize(
    ("logged_in", "expires"),
    [
        (datetime(2026, 12, 1, 9, 0, tzinfo=IST), datetime(2026, 12, 2, 6, 0, tzinfo=IST)),
        (datetime(2026, 12, 1, 5, 59, tzinfo=IST), datetime(2026, 12, 1, 6, 0, tzinfo=IST)),
        (datetime(2026, 12, 1, 6, 0, tzinfo=IST), datetime(2026, 12, 2, 6, 0, tzinfo=IST)),
        (datetime(2026, 12, 31, 23, 30, tzinfo=IST), datetime(2027, 1, 1, 6, 0, tzinfo=IST)),
        (datetime(2026, 12, 1, 3, 0, tzinfo=ZoneInfo("UTC")), datetime(2026, 12, 2, 6, 0, tzinfo=IST)),
    ],
)
def test_a_session_expires_at_the_next_six_in_the_morning_ist(logged_in, expires):
    assert session_expiry(logged_in_at=logged_in) == expires


def test_not_configured_without_an_api_key(kite_settings):
    kite_settings.KITE_API_KEY = ""
    kite_settings.KITE_ACCESS_TOKEN = "bootstrap"
    save()
    state = session_state(now=MORNING)
    assert state.state == "not_configured"
    assert access_token(now=MORNING) == ""


def test_login_needed_when_nothing_is_there(kite_settings):
    state = session_state(now=MORNING)
    assert (state.state, state.user_id, state.expires_at) == ("login_needed", "", None)
    assert state.detail.startswith("Kite login needed: no one has logged in")
    assert access_token(now=MORNING) == ""


def test_a_saved_session_is_valid_until_six_and_its_token_is_read_back(kite_settings):
    save()
    state = session_state(now=MORNING)
    assert (state.state, state.user_id) == ("valid", "AB1234")
    assert state.expires_at == datetime(2026, 12, 2, 6, 0, tzinfo=IST)
    assert state.detail == "AB1234 logged in, valid until 02 Dec 06:00 IST"
    assert access_token(now=MORNING) == "stored-token-1"
    assert "stored-token-1" not in redact("token stored-token-1 in a log line")  # registered as a secret

    after = datetime(2026, 12, 2, 6, 0, tzinfo=IST)
    assert session_state(now=after).state == "login_needed"
    assert "expired at 02 Dec 06:00 IST" in session_state(now=after).detail
    assert access_token(now=after) == ""


def test_a_valid_session_beats_the_bootstrap_token(kite_settings, tmp_path):
    path = tmp_path / "token"
    path.write_text("file-token\n")
    kite_settings.KITE_ACCESS_TOKEN = "env-token"
    kite_settings.KITE_ACCESS_TOKEN_FILE = str(path)
    assert access_token(now=MORNING) == "file-token"  # the file wins over the variable
    assert session_state(now=MORNING).state == "bootstrap"
    save()
    assert access_token(now=MORNING) == "stored-token-1"
    assert session_state(now=MORNING).state == "valid"
    # Expired: back to the bootstrap, which the state names.
    tomorrow = MORNING + timedelta(days=1)
    assert access_token(now=tomorrow) == "file-token"
    state = session_state(now=tomorrow)
    assert state.state == "bootstrap"
    assert "KITE_ACCESS_TOKEN_FILE" in state.detail and "expired" in state.detail
    kite_settings.KITE_ACCESS_TOKEN_FILE = ""
    assert access_token(now=tomorrow) == "env-token"


def test_the_latest_session_is_the_one_that_counts(kite_settings):
    save("first-token", now=MORNING)
    save("second-token", now=MORNING + timedelta(minutes=5), user="CD5678")
    assert access_token(now=MORNING + timedelta(minutes=6)) == "second-token"
    assert session_state(now=MORNING + timedelta(minutes=6)).user_id == "CD5678"


def test_a_refused_session_falls_back_to_the_bootstrap_or_says_login_needed(kite_settings):
    save()
    assert token_refused(token="stored-token-1", detail="403 TokenException", source="ticker") is True
    assert token_refused(token="stored-token-1", detail="again", source="broker") is False
    session = KiteSession.objects.get()
    assert session.refused_detail == "403 TokenException"
    state = session_state(now=MORNING)
    assert state.state == "login_needed"
    assert "Kite refused the session of AB1234" in state.detail
    assert access_token(now=MORNING) == ""

    kite_settings.KITE_ACCESS_TOKEN = "env-token"
    assert session_state(now=MORNING).state == "bootstrap"
    assert access_token(now=MORNING) == "env-token"


def test_a_refused_bootstrap_token_is_remembered_by_fingerprint_only(kite_settings):
    kite_settings.KITE_ACCESS_TOKEN = "env-token-abc"
    assert token_refused(token="env-token-abc", detail="Incorrect `api_key` or `access_token`.",
                         source="broker") is True  # fmt: skip
    assert token_refused(token="env-token-abc", detail="again", source="ticker") is False
    refusal = RefusedToken.objects.get()
    assert refusal.token_fingerprint == token_fingerprint("env-token-abc")
    assert "env-token-abc" not in str(RefusedToken.objects.values().get())
    state = session_state(now=MORNING)
    assert state.state == "login_needed"
    assert "Kite refused the token in KITE_ACCESS_TOKEN" in state.detail
    assert access_token(now=MORNING) == ""
    # A desk's script writes a new bootstrap token: usable again.
    kite_settings.KITE_ACCESS_TOKEN = "env-token-new"
    assert session_state(now=MORNING).state == "bootstrap"
    assert access_token(now=MORNING) == "env-token-new"


def test_the_first_refusal_of_the_token_in_use_alerts_once(kite_settings, django_capture_on_commit_callbacks):
    save()
    with django_capture_on_commit_callbacks(execute=True):
        assert token_refused(token="stored-token-1", detail="TokenException", source="ticker")
        assert not token_refused(token="stored-token-1", detail="TokenException", source="broker")
    alerts = Alert.objects.filter(kind=Kind.KITE_LOGIN)
    assert alerts.count() == 1
    assert alerts.get().repeats == 0


def test_a_stale_token_refused_after_a_new_login_does_not_alert(
    kite_settings, django_capture_on_commit_callbacks
):
    save("old-token", now=MORNING - timedelta(days=1))
    save("new-token", now=MORNING)
    with django_capture_on_commit_callbacks(execute=True):
        assert token_refused(token="old-token", detail="TokenException", source="ticker") is True
    assert not Alert.objects.filter(kind=Kind.KITE_LOGIN).exists()
    assert session_state(now=MORNING).state == "valid"
    assert access_token(now=MORNING) == "new-token"


def test_token_refused_never_raises(kite_settings, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("database away")

    monkeypatch.setattr(store, "_token_refused", broken)
    assert token_refused(token="whatever", detail="", source="ticker") is False
    assert token_refused(token="", detail="", source="ticker") is False


def test_the_column_never_holds_the_token(kite_settings):
    save("very-secret-access-token")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM kite_sessions")
        row = cursor.fetchone()
    assert not any("very-secret-access-token" in str(value) for value in row)
    session = KiteSession.objects.get()
    assert Fernet(kite_settings.KITE_TOKEN_KEY).decrypt(session.token_encrypted.encode()) == (
        b"very-secret-access-token"
    )


@pytest.mark.parametrize("key", ["", "not-a-fernet-key"])
def test_saving_needs_a_usable_key_and_writes_nothing_without_it(kite_settings, key):
    kite_settings.KITE_TOKEN_KEY = key
    with pytest.raises(TokenKeyError, match="KITE_TOKEN_KEY") as raised:
        save()
    assert "Fernet.generate_key()" in str(raised.value)
    assert not KiteSession.objects.exists()


def test_reading_a_stored_token_with_a_missing_or_other_key_says_so(kite_settings):
    save()
    kite_settings.KITE_TOKEN_KEY = Fernet.generate_key().decode()
    with pytest.raises(TokenKeyError, match="was the key changed"):
        access_token(now=MORNING)
    state = session_state(now=MORNING)  # the state never raises: it says why
    assert state.state == "login_needed"
    assert "KITE_TOKEN_KEY cannot decrypt" in state.detail
    kite_settings.KITE_TOKEN_KEY = ""
    with pytest.raises(TokenKeyError, match="KITE_TOKEN_KEY is not set"):
        access_token(now=MORNING)


def test_logged_out_says_login_needed(kite_settings):
    save()
    assert session_logged_out(now=MORNING + timedelta(hours=1)) is not None
    assert session_logged_out(now=MORNING + timedelta(hours=2)) is None  # nothing open
    state = session_state(now=MORNING + timedelta(hours=3))
    assert state.state == "login_needed"
    assert "AB1234 logged out at 01 Dec 10:00 IST" in state.detail


def test_the_version_changes_with_every_change(kite_settings, tmp_path):
    versions = [session_version()]
    save()
    versions.append(session_version())
    token_refused(token="stored-token-1", detail="", source="ticker")
    versions.append(session_version())
    save("second", now=MORNING + timedelta(minutes=1))
    versions.append(session_version())
    session_logged_out()
    versions.append(session_version())
    path = tmp_path / "token"
    path.write_text("bootstrap-one")
    kite_settings.KITE_ACCESS_TOKEN_FILE = str(path)
    versions.append(session_version())
    path.write_text("bootstrap-two")
    versions.append(session_version())
    token_refused(token="bootstrap-two", detail="", source="ticker")
    versions.append(session_version())
    assert len(set(versions)) == len(versions)
    assert session_version() == versions[-1]  # and stays put while nothing changes
    assert session_state().version == versions[-1]


def test_an_unreadable_token_file_is_no_token(kite_settings, tmp_path):
    kite_settings.KITE_ACCESS_TOKEN = "env-token"
    kite_settings.KITE_ACCESS_TOKEN_FILE = str(tmp_path / "missing")
    assert access_token(now=MORNING) == ""
    assert session_state(now=MORNING).state == "login_needed"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_postgres_notifies_the_session_channel_on_commit(kite_settings):
    import psycopg2

    listener = psycopg2.connect(**connection.get_connection_params())
    listener.autocommit = True

    def received() -> list[str]:
        listener.poll()
        channels = [n.channel for n in listener.notifies]
        listener.notifies.clear()
        return channels

    try:
        with listener.cursor() as cursor:
            cursor.execute(f"LISTEN {SESSION_CHANNEL}")
        with transaction.atomic():
            save()
            assert received() == []  # not before the commit
        assert wait_for(received, what="the notification of the saved session") == [SESSION_CHANNEL]
        token_refused(token="stored-token-1", detail="", source="ticker")
        assert wait_for(received, what="the notification of the refusal") == [SESSION_CHANNEL]
    finally:
        listener.close()


def test_a_caller_that_alerts_itself_can_ask_for_no_alert(kite_settings, django_capture_on_commit_callbacks):
    save()
    with django_capture_on_commit_callbacks(execute=True):
        assert token_refused(token="stored-token-1", detail="TokenException", source="broker", alert=False)
    assert not Alert.objects.filter(kind=Kind.KITE_LOGIN).exists()
    assert session_state(now=MORNING).state == "login_needed"
