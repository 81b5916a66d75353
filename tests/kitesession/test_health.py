"""``/healthz`` has a ``kite`` section (state, user, expiry, detail; never the token) for
staff and the health token; the session's state never turns it 503 nor changes its status."""

import pytest

from kitesession.store import session_save, token_refused

# The section is read on /healthz's own threads: they see only committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


def test_the_kite_section_shows_the_session_without_its_token(staff_client, kite_settings):
    kite_settings.HEALTHZ_TOKEN = ""
    before = staff_client.get("/healthz")
    assert before.json()["kite"]["state"] == "login_needed"
    assert before.json()["kite"]["detail"].startswith("Kite login needed")

    session_save(access_token="stored-secret-token", user_id="AB1234", actor="test")
    response = staff_client.get("/healthz")
    body = response.json()
    assert set(body["kite"]) == {"state", "user_id", "expires_at", "detail"}
    assert (body["kite"]["state"], body["kite"]["user_id"]) == ("valid", "AB1234")
    assert body["kite"]["expires_at"].endswith("T06:00:00+05:30")
    assert "stored-secret-token" not in response.content.decode()
    # The state of the session changes neither the code nor the status.
    assert (response.status_code, body["status"]) == (before.status_code, before.json()["status"])

    token_refused(token="stored-secret-token", detail="TokenException", source="ticker", alert=False)
    refused = staff_client.get("/healthz")
    assert refused.json()["kite"]["state"] == "login_needed"
    assert (refused.status_code, refused.json()["status"]) == (before.status_code, before.json()["status"])


def test_anonymous_callers_see_only_the_sessions_state(client, kite_settings):
    session_save(access_token="stored-secret-token", user_id="AB1234", actor="test")
    body = client.get("/healthz").json()
    assert body["kite"] == {"state": "valid"}
    assert "AB1234" not in str(body) and "stored-secret-token" not in str(body)
    token_refused(token="stored-secret-token", detail="TokenException", source="ticker", alert=False)
    assert client.get("/healthz").json()["kite"] == {"state": "login_needed"}


def test_not_configured_says_so(staff_client, kite_settings):
    kite_settings.KITE_API_KEY = ""
    assert staff_client.get("/healthz").json()["kite"]["state"] == "not_configured"
