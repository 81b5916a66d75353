"""Secrets from the environment never reach logs or DEBUG error pages."""

import pytest
from django.test import override_settings
from django.urls import path

from tests.helpers import child_env, run_python

ACCESS_TOKEN = "kite-access-token-8c1f3e9d2b"
API_SECRET = "kite-api-secret-77aa01bc"
DB_PASSWORD = "db-pass-5e6f7a8b"
REDIS_PASSWORD = "redis-pass-0d9c8b7a"


def leaky_view(request):
    token = ACCESS_TOKEN  # a local variable holding a secret, as a careless caller might
    connection_string = f"postgres://desk:{DB_PASSWORD}@db:5432/portal"
    raise RuntimeError(f"broker refused {token} via {connection_string}")


urlpatterns = [path("boom/", leaky_view)]


@pytest.mark.django_db
@override_settings(
    DEBUG=True,
    ROOT_URLCONF=__name__,
    KITE_ACCESS_TOKEN=ACCESS_TOKEN,
    KITE_API_SECRET=API_SECRET,
    REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0",
    EXTRA_SECRET_VALUES=[DB_PASSWORD],
    SOME_SERVICE_URL=f"https://user:{REDIS_PASSWORD}@example.com/",
)
def test_debug_error_page_hides_secrets(client):
    client.raise_request_exception = False
    response = client.get("/boom/")
    assert response.status_code == 500
    page = response.content.decode()
    assert "RuntimeError" in page  # it is the technical error page
    for secret in (ACCESS_TOKEN, API_SECRET, DB_PASSWORD, REDIS_PASSWORD):
        assert secret not in page, f"{secret} leaked into the DEBUG page"
    assert "KITE_ACCESS_TOKEN" in page  # the setting is listed, its value is masked


def test_logs_never_carry_secrets():
    env = child_env(
        DJANGO_SETTINGS_MODULE="tradingportal.settings",
        DEBUG="0",
        SECRET_KEY="s" * 50,
        LOG_FORMAT="json",
        KITE_API_KEY="kiteapikey42",
        KITE_ACCESS_TOKEN=ACCESS_TOKEN,
        KITE_API_SECRET=API_SECRET,
        REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0",
    )
    env.pop("DATABASE_URL", None)
    code = f"""
import logging, django
django.setup()
log = logging.getLogger("ingestion.feed")
log.warning("connecting with api_key=%s token=%s", "kiteapikey42", "{ACCESS_TOKEN}")
log.info("redis at redis://:{REDIS_PASSWORD}@127.0.0.1:1/0", extra={{"secret": "{API_SECRET}"}})
try:
    raise ValueError("bad token {ACCESS_TOKEN}")
except ValueError:
    log.exception("login failed")
"""
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "connecting with api_key=********" in output
    assert "ValueError" in output
    for secret in ("kiteapikey42", ACCESS_TOKEN, API_SECRET, REDIS_PASSWORD):
        assert secret not in output, f"{secret} leaked into the log"


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        (
            "InvalidURI: wss://ws.kite.trade/?api_key=k3y&access_token=unknown-token-123 isn't valid",
            "unknown-token-123",
        ),
        ('GET /x?access_token=unknown-token-123&tokens=256265 HTTP/1.1" 404', "unknown-token-123"),
        ("Authorization: token someapikey:unknown-token-123", "unknown-token-123"),
        ("request_token=unknown-token-123&checksum=abc", "unknown-token-123"),
    ],
)
def test_credentials_are_masked_by_their_shape_whatever_their_value(text, leaked):
    """A token the portal never heard of (yesterday's, someone else's) is masked too."""
    from tradingportal.security import REDACTED, redact

    masked = redact(text)
    assert leaked not in masked and REDACTED in masked


def test_ordinary_parameters_are_left_alone():
    from tradingportal.security import redact

    text = "GET /api/ticks/latest/?tokens=256265,738561&instrument_token=5 HTTP/1.1"
    assert redact(text) == text
