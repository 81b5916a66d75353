"""Alert settings from the environment: the defaults, an email URL, and bad values that stop
the portal at start with a message naming the variable."""

import json

import pytest

from tests.helpers import run_python
from tests.tradingportal.test_settings import clean_env

PROBE = """
import json, django
from django.conf import settings
django.setup()
from tradingportal.security import secret_values
names = ("TELEGRAM_API_URL", "TELEGRAM_CHAT_ID", "ALERT_EMAILS", "ALERT_REPEAT_MINUTES", "ALERT_SEND_TIMEOUT",
         "ALERT_SEND_ATTEMPTS", "PORTAL_BASE_URL", "EMAIL_BACKEND", "EMAIL_HOST",
         "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_USE_TLS", "EMAIL_TIMEOUT", "DEFAULT_FROM_EMAIL")
resolved = {name: getattr(settings, name) for name in names}
resolved["secrets"] = secret_values()
print(json.dumps(resolved))
"""


def resolve(**values: str) -> dict:
    result = run_python(PROBE, clean_env(SECRET_KEY="x" * 50, **values))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_defaults_and_values_from_the_environment():
    defaults = resolve()
    assert defaults["TELEGRAM_API_URL"] == "https://api.telegram.org"
    assert (defaults["ALERT_REPEAT_MINUTES"], defaults["ALERT_EMAILS"], defaults["PORTAL_BASE_URL"]) == (
        30,
        [],
        "",
    )
    assert defaults["EMAIL_BACKEND"] == "django.core.mail.backends.smtp.EmailBackend"
    assert (defaults["EMAIL_HOST"], defaults["EMAIL_PORT"]) == ("localhost", 25)

    token = "7734019255:AAHf4k3-t0ken_for_tests-only-9XyZabc"
    given = resolve(
        TELEGRAM_BOT_TOKEN=token, TELEGRAM_CHAT_ID="-100123", ALERT_EMAILS="desk@example.com,risk@example.com",
        ALERT_REPEAT_MINUTES="10", PORTAL_BASE_URL="https://desk.example.com/", ALERT_SEND_TIMEOUT="3",
        EMAIL_URL="smtp+tls://alerts%40example.com:mail-pass-0123@smtp.example.com:587",
    )  # fmt: skip
    assert given["ALERT_EMAILS"] == ["desk@example.com", "risk@example.com"]
    assert (given["ALERT_REPEAT_MINUTES"], given["PORTAL_BASE_URL"]) == (10, "https://desk.example.com")
    assert (given["EMAIL_HOST"], given["EMAIL_PORT"], given["EMAIL_USE_TLS"]) == (
        "smtp.example.com",
        587,
        True,
    )
    assert given["EMAIL_HOST_USER"] == "alerts@example.com" and given["EMAIL_TIMEOUT"] == 3
    assert token in given["secrets"] and "mail-pass-0123" in given["secrets"]  # masked in every log line


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TELEGRAM_API_URL", "http://api.telegram.org"),
        ("TELEGRAM_API_URL", "ftp://127.0.0.1"),
        ("ALERT_EMAILS", "desk@example.com,not-an-address"),
        ("ALERT_REPEAT_MINUTES", "0"),
        ("ALERT_MARKET_HOURS", "15:30-09:15"),
        ("ALERT_MARKET_HOURS", "9am-3pm"),
        ("PORTAL_BASE_URL", "desk.example.com"),
    ],
)
def test_a_bad_value_stops_the_portal_naming_the_variable(name, value):
    result = run_python(PROBE, clean_env(SECRET_KEY="x" * 50, **{name: value}))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and name in result.stderr.splitlines()[-1]
