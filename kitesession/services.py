"""Logging in to Kite from the portal, and logging out.

The login: ``/kite/login/`` sends the user to ``KITE_LOGIN_URL`` with a state in Kite's
``redirect_params``; Kite sends them back to ``/kite/callback/`` with a request token and that
state. The state is signed (``django.core.signing``, so it cannot be made up or altered),
short-lived (``KITE_LOGIN_STATE_SECONDS``), bound to the user and to a one-time nonce kept in
their portal session (so a callback started by someone else, or replayed, is refused: login
CSRF). The request token is exchanged with ``KiteConnect.generate_session`` (whose checksum is
``sha256(api_key + request_token + api_secret)``) at ``KITE_API_URL`` and the access token
stored through ``session_save``. Nothing is written unless every step succeeded.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.core import signing
from django.utils import timezone

from kitesession.crypto import TokenKeyError, token_decrypt, token_key_problem
from kitesession.models import KiteSession
from kitesession.store import KiteSessionState, session_logged_out, session_save, session_state
from tradingportal.security import redact, secret_register

logger = logging.getLogger(__name__)

STATE_SALT = "kitesession.login"
PENDING_KEY = "kitesession_pending_logins"
MAX_PENDING = 5  # logins started in other tabs that may still come back


class LoginRefused(Exception):
    """A login that cannot go on: ``reason`` for people, ``status`` the HTTP code to answer."""

    def __init__(self, reason: str, *, status: int = 400) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


def _kite(access_token: str | None = None) -> Any:
    from kiteconnect import KiteConnect

    return KiteConnect(
        api_key=settings.KITE_API_KEY, access_token=access_token, root=settings.KITE_API_URL,
        timeout=settings.KITE_REQUEST_TIMEOUT,
    )  # fmt: skip


def login_problem() -> str:
    """Why a login cannot be made now (missing settings), or "" when it can."""
    if not settings.KITE_API_KEY:
        return "Kite is not configured: set KITE_API_KEY (and KITE_API_SECRET) to log in to Kite."
    if not settings.KITE_API_SECRET:
        return "KITE_API_SECRET is not set: the portal needs it to exchange Kite's request token."
    if urlsplit(settings.KITE_LOGIN_URL).scheme not in ("https", "http"):
        return "KITE_LOGIN_URL must be an https:// URL (Kite's login page, https://kite.zerodha.com/connect/login)."
    return token_key_problem()


# --- the state carried through Kite ---------------------------------------------------------


def login_start(*, session: SessionBase, user_pk: int | str | None) -> str:
    """The URL of Kite's login page for this user, with a fresh state remembered in their
    portal session. ``LoginRefused`` when a login cannot be made (nothing remembered)."""
    problem = login_problem()
    if problem:
        raise LoginRefused(problem)
    nonce = secrets.token_urlsafe(24)
    pending = [n for n in session.get(PENDING_KEY, []) if isinstance(n, str)][-(MAX_PENDING - 1) :]
    session[PENDING_KEY] = [*pending, nonce]
    state = signing.dumps({"n": nonce, "u": user_pk}, salt=STATE_SALT, compress=True)
    query = urlencode(
        {"v": "3", "api_key": settings.KITE_API_KEY, "redirect_params": urlencode({"state": state})}
    )
    return f"{settings.KITE_LOGIN_URL}?{query}"


def login_state_check(*, session: SessionBase, user_pk: int | str | None, state: str) -> None:
    """Accept ``state`` once: signed by us, not older than ``KITE_LOGIN_STATE_SECONDS``, for
    this user, started in this portal session and not used yet. ``LoginRefused`` (403) if not."""
    if not state:
        raise LoginRefused(
            'The callback has no state: start the login from the portal\'s "Log in to Kite".', status=403
        )
    try:
        value = signing.loads(state, salt=STATE_SALT, max_age=settings.KITE_LOGIN_STATE_SECONDS)
    except signing.SignatureExpired:
        raise LoginRefused(
            f"This login was started more than {settings.KITE_LOGIN_STATE_SECONDS} seconds ago: start it again.",
            status=403,
        ) from None
    except signing.BadSignature:
        raise LoginRefused(
            "The login state is not one the portal issued: start the login again.", status=403
        ) from None
    if not isinstance(value, dict) or value.get("u") != user_pk:
        raise LoginRefused("This login was started by another user: start your own login.", status=403)
    pending = list(session.get(PENDING_KEY, []))
    if value.get("n") not in pending:
        raise LoginRefused(
            "This login was already completed, or was started in another browser session: start the login again.",
            status=403,
        )
    pending.remove(value["n"])
    session[PENDING_KEY] = pending  # single use, whatever happens next


# --- the exchange -----------------------------------------------------------------------------


def session_login(*, request_token: str, actor: str) -> KiteSessionState:
    """Exchange Kite's ``request_token`` for an access token and store it. ``LoginRefused``
    when a setting is missing (400, before Kite is asked), Kite refuses (400) or cannot be
    reached (502): nothing is stored then."""
    problem = login_problem()
    if problem:
        raise LoginRefused(problem)
    if not request_token or len(request_token) > 200:
        raise LoginRefused("Kite's callback carries no request token: start the login again.")
    from kiteconnect.exceptions import KiteException

    secret_register(request_token)
    try:
        data = _kite().generate_session(request_token, api_secret=settings.KITE_API_SECRET)
    except KiteException as exc:
        reason = redact(f"{type(exc).__name__}: {exc}")[:300]
        logger.warning("Kite refused the login of %s: %s", actor, reason)
        raise LoginRefused(f"Kite refused the login ({reason}). Start the login again.") from None
    except Exception as exc:  # noqa: BLE001 - requests' errors: Kite not reached, or no answer in time
        reason = redact(f"{type(exc).__name__}: {exc}")[:300]
        logger.warning("Kite could not be reached for the login of %s: %s", actor, reason)
        raise LoginRefused(f"Kite could not be reached ({reason}). Try again.", status=502) from None
    token, user_id = str(data.get("access_token") or ""), str(data.get("user_id") or "")
    if not token or not user_id:
        raise LoginRefused("Kite's answer had no access token or user id. Start the login again.", status=502)
    secret_register(token)
    expected = settings.KITE_USER_ID
    if expected and user_id.upper() != expected.upper():
        _invalidate_quietly(token)
        logger.warning("Kite login by %s as %s refused: the desk's Kite user is %s", actor, user_id, expected)
        raise LoginRefused(
            f"You logged in to Kite as {user_id}, but this desk trades as {expected} (KITE_USER_ID): nothing was "
            f"changed. Log out of Kite in your browser, then log in to Kite again as {expected}.",
            status=403,
        )
    session_save(access_token=token, user_id=user_id, actor=actor, user_name=str(data.get("user_name") or ""))
    state = session_state()
    logger.info("Kite login of %s by %s: %s", user_id, actor, state.state)
    return state


def _invalidate_quietly(token: str) -> None:
    """End a session Kite handed out that the portal will not keep (best effort)."""
    try:
        _kite(token).invalidate_access_token()
    except Exception as exc:  # noqa: BLE001 - it dies at 06:00 IST anyway
        logger.warning(
            "could not invalidate a refused Kite session: %s", redact(f"{type(exc).__name__}: {exc}")
        )


# --- logging out ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogoutOutcome:
    session: KiteSession | None  # the session logged out here, None when none was open
    at_kite: bool  # Kite invalidated the token
    detail: str  # what happened, for people


def session_logout(*, actor: str) -> LogoutOutcome:
    """Invalidate the latest stored session at Kite (``invalidate_access_token``) and mark it
    logged out here, even when Kite cannot be reached (then saying so: the token may still
    work at Kite until 06:00 IST). The bootstrap token is left alone."""
    latest = KiteSession.objects.order_by("-created_at", "-id").first()
    if latest is None or latest.logged_out_at is not None:
        return LogoutOutcome(None, False, "No stored Kite session is open: nothing to log out.")
    at_kite, note = False, ""
    if latest.refused_at is not None or latest.expires_at <= timezone.now():
        note = "Kite had already ended it (expired or refused)"
    else:
        try:
            token = token_decrypt(latest.token_encrypted)
        except TokenKeyError as exc:
            note = f"not invalidated at Kite: {exc}"
        else:
            secret_register(token)
            try:
                _kite(token).invalidate_access_token()
            except Exception as exc:  # noqa: BLE001 - any failure: logged out here all the same
                note = (
                    f"Kite could not invalidate it ({redact(f'{type(exc).__name__}: {exc}')[:200]}); "
                    "the token may still work at Kite until 06:00 IST"
                )
            else:
                at_kite = True
    session = session_logged_out(session_id=latest.pk)
    if session is None:  # logged out by someone else meanwhile
        return LogoutOutcome(None, at_kite, "The Kite session was logged out meanwhile.")
    where = "at Kite and here" if at_kite else f"here ({note})"
    logger.info(
        "Kite session %s of %s logged out by %s, at Kite: %s", session.pk, session.user_id, actor, at_kite
    )
    return LogoutOutcome(session, at_kite, f"Logged out {session.user_id} {where}.")
