"""Keeping secrets out of logs, error reports and pages.

The set of secret values is built from settings (Kite key, secret and token, the Django
secret key, passwords inside DATABASE_URL/REDIS_URL) plus any registered at run time
(e.g. an access token an operator saved today). Text that leaves the process through a
log line or an error report is scrubbed of every one of them.
"""

import html
import re
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.utils.safestring import SafeString, mark_safe
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

REDACTED = "********"
_MIN_SECRET_LENGTH = 4
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.I)
# Credentials by their shape, whatever their value: ``access_token=...`` in a query string
# or form body (a URL in an exception, an access-log line), and Kite's
# ``Authorization: token api_key:access_token``.
_SECRET_PARAMETER = re.compile(
    r"(?P<name>\b(?:access_token|request_token|refresh_token|api_secret|api_key|enctoken|password|passwd|"
    r"secret|token|checksum)=)(?P<value>[^&\s'\"<>;,]+)",
    re.I,
)
_AUTHORIZATION = re.compile(
    r"(?P<scheme>\b(?:token|bearer|basic)\s+)(?P<value>[\w.~+/=-]+:[\w.~+/=-]+)", re.I
)

_runtime_secrets: set[str] = set()
_lock = threading.Lock()


def secret_register(value: str | None) -> None:
    """Treat ``value`` as a secret from now on (e.g. a token read from the database)."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _runtime_secrets.add(value)


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def secret_values() -> list[str]:
    """Every secret value known now, longest first (so no secret is half-replaced)."""
    values: set[str] = set(_runtime_secrets)
    for name in ("SECRET_KEY", "KITE_API_KEY", "KITE_API_SECRET", "KITE_ACCESS_TOKEN"):
        values.add(getattr(settings, name, "") or "")
    for db in settings.DATABASES.values():
        values.add(db.get("PASSWORD") or "")
    values.add(_url_password(getattr(settings, "REDIS_URL", "") or "") or "")
    values.update(getattr(settings, "EXTRA_SECRET_VALUES", ()))
    return sorted((v for v in values if len(v) >= _MIN_SECRET_LENGTH), key=len, reverse=True)


def url_for_display(url: str) -> str:
    """``url`` fit for logs and records: no user, password, query or fragment."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return redact(urlunsplit((parts.scheme, netloc, parts.path, "", "")))


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with secret values, URL passwords, credential query parameters
    (``access_token=...``) and Kite authorization values replaced by a fixed mask."""
    for secret in secret_values() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    if "=" in text:
        text = _SECRET_PARAMETER.sub(lambda m: f"{m['name']}{REDACTED}", text)
    return _AUTHORIZATION.sub(lambda m: f"{m['scheme']}{REDACTED}", text)


class RedactingExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, also hiding settings and headers named like credentials. Secret
    *values* anywhere in the report are masked by ``RedactingExceptionReporter``."""

    hidden_settings = re.compile(
        "API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|AUTHORIZATION|CREDENTIAL", flags=re.I
    )


class RedactingExceptionReporter(ExceptionReporter):
    """Masks secrets in the whole rendered report: the exception message, source lines
    and anything else the filter cannot see (the last line of defence)."""

    def get_traceback_html(self) -> SafeString:
        secrets = secret_values()
        page = redact(str(super().get_traceback_html()), [*secrets, *(html.escape(s) for s in secrets)])
        return mark_safe(page)  # noqa: S308 - Django rendered it escaped; we only masked substrings

    def get_traceback_text(self) -> SafeString:
        return mark_safe(redact(str(super().get_traceback_text())))  # noqa: S308
