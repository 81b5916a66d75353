"""Security: secrets kept out of logs and pages, login lockout, API throttles, CSP.

The set of secret values is built from settings (Kite key, secret and token, the Django
secret key, passwords inside DATABASE_URL/REDIS_URL) plus any registered at run time
(e.g. an access token an operator saved today). Text that leaves the process through a
log line or an error report is scrubbed of every one of them.

The rest are the portal's hooks into well-kept libraries: the client address behind
``TRUSTED_PROXY_COUNT`` proxies (one answer for django-axes and DRF's throttles), the
lockout page of django-axes, DRF throttles whose rates are read from settings at request
time, an API exception handler that counts anonymous callers' refused requests against
their throttle, and django-csp's middleware with the websocket origin of this host.
"""

from __future__ import annotations

import html
import logging
import math
import re
import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

if TYPE_CHECKING:
    from rest_framework.response import Response

logger = logging.getLogger(__name__)

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


# --- who is calling -----------------------------------------------------------------------


def client_address(request: HttpRequest) -> str:
    """The caller's address: ``REMOTE_ADDR``, or with ``TRUSTED_PROXY_COUNT`` proxies in
    front, the address the outermost of them saw in ``X-Forwarded-For`` (what DRF does
    with ``NUM_PROXIES``). A client-sent ``X-Forwarded-For`` is never trusted beyond that,
    so nobody escapes a lockout or a throttle by inventing addresses."""
    remote = request.META.get("REMOTE_ADDR", "") or ""
    proxies = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if proxies <= 0 or not forwarded:
        return remote
    hops = [hop.strip() for hop in forwarded.split(",")]
    return hops[-min(proxies, len(hops))] or remote


# --- login lockout (django-axes) ----------------------------------------------------------


def login_lockout_response(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    """django-axes' ``AXES_LOCKOUT_CALLABLE``: the lockout page, HTTP 429 with ``Retry-After``.

    Takes what axes passes in either of its call shapes (its async middleware passes the
    credentials where the sync one passes the original response) and relies on neither.
    """
    from axes.helpers import get_client_username
    from axes.models import AccessAttempt

    username = str(get_client_username(request) or "")
    cool_off: timedelta = settings.AXES_COOLOFF_TIME
    last_failure = AccessAttempt.objects.filter(
        username=username, ip_address=getattr(request, "axes_ip_address", None) or client_address(request)
    ).aggregate(last=Max("attempt_time"))["last"]
    remaining = cool_off if last_failure is None else last_failure + cool_off - timezone.now()
    seconds = max(1, math.ceil(remaining.total_seconds()))
    context = {
        "username": username,
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "minutes": max(1, math.ceil(seconds / 60)),
    }
    response = HttpResponse(render_to_string("registration/locked_out.html", context, request), status=429)
    response["Retry-After"] = str(seconds)
    logger.warning(
        "login refused: locked out after %d failures, retry in %d s", context["failure_limit"], seconds
    )
    return response


# --- API throttles (DRF) --------------------------------------------------------------------


class _FailOpen:
    """A throttle whose counter store (the cache: Redis) is down lets requests through:
    an outage of Redis must not refuse order cancels and position reads. Logged once, then
    at most once a minute."""

    _failure: Any = None

    @classmethod
    def _log(cls) -> Any:
        if _FailOpen._failure is None:
            from tradingportal.logging import RepeatedFailure  # tradingportal.logging imports this module

            _FailOpen._failure = RepeatedFailure(
                logging.getLogger(__name__), "counting API requests for throttles"
            )
        return _FailOpen._failure

    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            allowed = super().allow_request(request, view)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - the cache is down: fail open
            self._log().failed(exc)
            return True
        if _FailOpen._failure is not None:
            _FailOpen._failure.succeeded()
        return bool(allowed)


class AnonymousThrottle(_FailOpen, AnonRateThrottle):
    """Per anonymous address, at ``API_THROTTLE_ANON`` (read per request, so tests and
    operators can change it without re-importing DRF)."""

    def get_rate(self) -> str | None:
        return settings.API_THROTTLE_ANON or None

    def get_ident(self, request: Any) -> str:
        return client_address(request)


class UserThrottle(_FailOpen, UserRateThrottle):
    """Per user (per address for anonymous callers), at ``API_THROTTLE_USER``."""

    def get_rate(self) -> str | None:
        return settings.API_THROTTLE_USER or None

    def get_ident(self, request: Any) -> str:
        return client_address(request)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, except that a request refused for missing or wrong credentials still
    counts against the view's throttles (DRF checks throttles only after authentication and
    permissions). Without this the anonymous throttle would never see a token guesser."""
    from rest_framework import exceptions
    from rest_framework.views import exception_handler

    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        view, request = context.get("view"), context.get("request")
        if view is not None and request is not None:
            try:
                view.check_throttles(request)
            except exceptions.Throttled as throttled:
                exc = throttled
    return exception_handler(exc, context)


# --- Content-Security-Policy (django-csp) -------------------------------------------------


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware; ``connect-src`` also names this host's websocket origin
    (``ws://`` or ``wss://``, as the page itself), which ``'self'`` covers only in CSP 3
    browsers."""

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        try:
            host = request.get_host()
        except DisallowedHost:
            return parts
        websocket = f"{'wss' if request.is_secure() else 'ws'}://{host}"
        update = dict(parts.update or {})
        update["connect-src"] = [*update.get("connect-src", ()), websocket]
        parts.update = update
        return parts
