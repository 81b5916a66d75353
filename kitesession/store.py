"""The Kite session store: the one place the feed, the Kite broker and reconciliation read
the access token from, per use.

A token comes from a login at the portal (``/kite/login/``: a ``KiteSession`` row, the
token encrypted with ``KITE_TOKEN_KEY``, valid until the next 06:00 IST) or from the
bootstrap (``KITE_ACCESS_TOKEN_FILE``, else ``KITE_ACCESS_TOKEN``) for desks that script
their login. A valid stored session wins over the bootstrap. The first time Kite refuses a
token (``token_refused``) it is remembered, by its session or, for the bootstrap, by a
fingerprint (never the token), and "Kite login needed" is alerted once.

Only the latest stored session counts. Every change to it (saved, refused, logged out)
NOTIFYs ``SESSION_CHANNEL`` on commit on PostgreSQL (a row trigger: whoever writes);
elsewhere readers poll ``session_version()``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone

from kitesession.crypto import TokenKeyError, token_decrypt, token_encrypt, token_fingerprint
from kitesession.models import KiteSession, RefusedToken
from tradingportal.logging import RepeatedFailure
from tradingportal.security import redact, secret_register

logger = logging.getLogger(__name__)

SESSION_CHANNEL = "kite_session"
IST = ZoneInfo("Asia/Kolkata")
EXPIRES_AT = time(6, 0)  # Kite's access tokens die every morning around 06:00 IST

VALID, LOGIN_NEEDED, BOOTSTRAP, NOT_CONFIGURED = "valid", "login_needed", "bootstrap", "not_configured"
STATES = (VALID, LOGIN_NEEDED, BOOTSTRAP, NOT_CONFIGURED)

_bootstrap_file = RepeatedFailure(logger, "reading KITE_ACCESS_TOKEN_FILE")


@dataclass(frozen=True)
class KiteSessionState:
    state: str  # "valid" | "login_needed" | "bootstrap" | "not_configured"
    user_id: str  # Kite's user id, "" when unknown
    expires_at: datetime | None
    detail: str  # one sentence for people
    version: str  # changes whenever the session changes (saved, refused, logged out)

    @property
    def usable(self) -> bool:
        """A token to trade and stream with is there (a stored session or the bootstrap)."""
        return self.state in (VALID, BOOTSTRAP)

    def as_dict(self) -> dict[str, object]:
        """For JSON (``/healthz``, the dashboard, ``kite_session --json``): never a token."""
        return {
            "state": self.state,
            "user_id": self.user_id,
            "expires_at": timezone.localtime(self.expires_at, IST).isoformat() if self.expires_at else None,
            "detail": self.detail,
            "version": self.version,
        }


def session_expiry(*, logged_in_at: datetime) -> datetime:
    """The next 06:00 IST after ``logged_in_at`` (a login at 05:59 lasts a minute)."""
    local = timezone.localtime(logged_in_at, IST)
    expiry = datetime.combine(local.date(), EXPIRES_AT, tzinfo=IST)
    if expiry <= local:
        expiry = datetime.combine(local.date() + timedelta(days=1), EXPIRES_AT, tzinfo=IST)
    return expiry


def ist_text(moment: datetime) -> str:
    """``02 Dec 06:00 IST``."""
    return timezone.localtime(moment, IST).strftime("%d %b %H:%M IST")


# --- reading ------------------------------------------------------------------------------


def _latest() -> KiteSession | None:
    return KiteSession.objects.order_by("-created_at", "-id").first()


def _unusable_reason(session: KiteSession | None, now: datetime) -> str:
    """Why the stored session gives no token now, or "" when it does."""
    if session is None:
        return "no one has logged in to Kite from the portal yet"
    if session.logged_out_at is not None:
        return f"{session.user_id} logged out at {ist_text(session.logged_out_at)}"
    if session.refused_at is not None:
        return f"Kite refused the session of {session.user_id} at {ist_text(session.refused_at)}"
    if session.expires_at <= now:
        return f"the session of {session.user_id} expired at {ist_text(session.expires_at)}"
    return ""


def _bootstrap() -> tuple[str, str]:
    """The bootstrap token and where it came from: ``KITE_ACCESS_TOKEN_FILE`` when set (a
    file a morning login script rewrites), else ``KITE_ACCESS_TOKEN``; ("", "") when none."""
    path = settings.KITE_ACCESS_TOKEN_FILE
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            _bootstrap_file.failed(exc.with_traceback(None))
            return "", ""
        _bootstrap_file.succeeded()
        return token, "KITE_ACCESS_TOKEN_FILE"
    token = settings.KITE_ACCESS_TOKEN
    return (token, "KITE_ACCESS_TOKEN") if token else ("", "")


def _refused(fingerprint: str) -> RefusedToken | None:
    return RefusedToken.objects.filter(token_fingerprint=fingerprint).first()


def session_version() -> str:
    """Changes whenever the session changes (saved, refused, logged out, the bootstrap token
    rewritten or refused): what the feed compares to notice a new login. Two small queries."""
    sessions = KiteSession.objects.aggregate(
        last=Max("id"), n=Count("id"), refused=Count("refused_at"), out=Count("logged_out_at")
    )
    refusals = RefusedToken.objects.aggregate(last=Max("id"), n=Count("id"))
    bootstrap, _ = _bootstrap()
    print_ = token_fingerprint(bootstrap)[:12] if bootstrap else "-"
    return (
        f"s{sessions['last'] or 0}.{sessions['n']}.{sessions['refused']}.{sessions['out']}"
        f"-r{refusals['last'] or 0}.{refusals['n']}-b{print_}"
    )


def session_state(*, now: datetime | None = None, with_version: bool = True) -> KiteSessionState:
    """What the portal trades and streams with now, in words for people. Never raises for a
    missing key (the state says so). One or two queries, plus the version's two unless
    ``with_version=False`` (pages that only show the state; ``version`` is "" then: no
    query at all when Kite is not configured)."""
    now = now or timezone.now()
    version = session_version() if with_version else ""
    if not settings.KITE_API_KEY:
        return KiteSessionState(
            NOT_CONFIGURED, "", None,
            "Kite is not configured (no KITE_API_KEY): the simulator feed and the paper broker are used.",
            version,
        )  # fmt: skip
    session = _latest()
    reason = _unusable_reason(session, now)
    if session is not None and not reason:
        try:
            token_decrypt(session.token_encrypted)
        except TokenKeyError as exc:
            reason = str(exc)
        else:
            return KiteSessionState(
                VALID, session.user_id, session.expires_at,
                f"{session.user_id} logged in, valid until {ist_text(session.expires_at)}", version,
            )  # fmt: skip
    token, source = _bootstrap()
    if token:
        refusal = _refused(token_fingerprint(token))
        if refusal is None:
            return KiteSessionState(
                BOOTSTRAP, "", None, f"using the token from {source} ({reason}); log in to Kite to replace it",
                version,
            )  # fmt: skip
        reason = f"{reason}; Kite refused the token in {source} at {ist_text(refusal.refused_at)}"
    return KiteSessionState(LOGIN_NEEDED, "", None, f"Kite login needed: {reason}", version)


def access_token(*, now: datetime | None = None) -> str:
    """The token to use now, read per use: a valid stored session's (decrypted) token wins
    over the bootstrap (``KITE_ACCESS_TOKEN_FILE``, else ``KITE_ACCESS_TOKEN``); "" when
    there is none usable (expired, refused, logged out, no ``KITE_API_KEY``).

    Raises ``TokenKeyError`` (an ``ImproperlyConfigured``) when a valid stored session
    cannot be read because ``KITE_TOKEN_KEY`` is missing or not the key it was saved with:
    logging in again will not help there, setting the key will."""
    now = now or timezone.now()
    if not settings.KITE_API_KEY:
        return ""
    session = _latest()
    if session is not None and not _unusable_reason(session, now):
        token = token_decrypt(session.token_encrypted)
        secret_register(token)
        return token
    token, _ = _bootstrap()
    if not token:
        return ""
    secret_register(token)
    if _refused(token_fingerprint(token)) is not None:
        return ""
    return token


def _current_fingerprint(now: datetime) -> str:
    """The fingerprint of the token ``access_token`` gives now, without decrypting."""
    session = _latest()
    if session is not None and not _unusable_reason(session, now):
        return session.token_fingerprint
    token, _ = _bootstrap()
    return token_fingerprint(token) if token else ""


# --- writing ------------------------------------------------------------------------------


def session_save(
    *, access_token: str, user_id: str, actor: str, user_name: str = "", now: datetime | None = None
) -> None:
    """Store a new session (the latest wins): the token encrypted with ``KITE_TOKEN_KEY``
    (``TokenKeyError`` before anything is written when the key is unusable), valid until the
    next 06:00 IST; PostgreSQL notifies ``SESSION_CHANNEL`` on commit."""
    if not access_token or not user_id:
        raise ValueError("a Kite session needs an access token and a user id")
    secret_register(access_token)
    now = now or timezone.now()
    ciphertext = token_encrypt(access_token)
    with transaction.atomic():
        session = KiteSession.objects.create(
            user_id=user_id[:32], user_name=user_name[:200], token_encrypted=ciphertext,
            token_fingerprint=token_fingerprint(access_token), created_at=now,
            expires_at=session_expiry(logged_in_at=now), created_by=actor[:150],
        )  # fmt: skip
    logger.info("Kite session %s saved for %s by %s", session.pk, session.user_id, actor)


def token_refused(
    *, token: str, detail: str, source: str, alert: bool = True, now: datetime | None = None
) -> bool:
    """Kite refused ``token`` (the ticker's 403, a REST ``TokenException``): the first time,
    mark its session (or, for the bootstrap token, its fingerprint) refused and, when it is
    the token in use, alert "Kite login needed" once (``alert=False``: the caller alerts
    itself, e.g. with the order it was found on). True only the first time for that token.
    Never raises into the caller (a failure is logged)."""
    if not token:
        return False
    try:
        return _token_refused(token=token, detail=redact(detail)[:300], source=source[:60], alert=alert,
                              now=now or timezone.now())  # fmt: skip
    except Exception:  # noqa: BLE001 - the caller is a feed or an order path: it must go on
        logger.exception("could not record that Kite refused a token (source %s)", source)
        return False


def _token_refused(*, token: str, detail: str, source: str, alert: bool, now: datetime) -> bool:
    secret_register(token)
    fingerprint = token_fingerprint(token)
    in_use = fingerprint == _current_fingerprint(now)
    with transaction.atomic():
        # One UPDATE ... WHERE refused_at IS NULL: of two processes refused at once, one wins.
        first = bool(
            KiteSession.objects.filter(token_fingerprint=fingerprint, refused_at__isnull=True).update(
                refused_at=now, refused_detail=detail
            )
        )
        if not first and not KiteSession.objects.filter(token_fingerprint=fingerprint).exists():
            _, first = RefusedToken.objects.get_or_create(
                token_fingerprint=fingerprint,
                defaults={"refused_at": now, "detail": detail, "source": source},
            )
        if first:
            logger.warning("Kite refused the access token (found by %s, in use: %s)", source, in_use)
            if in_use and alert:
                transaction.on_commit(lambda: _alert(detail))
    return first


def _alert(detail: str) -> None:
    from alerts.conditions import alert_kite_login_needed

    alert_kite_login_needed(detail=detail)  # never raises


def session_logged_out(*, session_id: int | None = None, now: datetime | None = None) -> KiteSession | None:
    """Mark a session logged out here (whatever Kite said): ``session_id``, else the latest.
    The session, or None when it is not there or already logged out."""
    now = now or timezone.now()
    with transaction.atomic():
        sessions = KiteSession.objects.select_for_update().order_by("-created_at", "-id")
        session = sessions.filter(pk=session_id).first() if session_id is not None else sessions.first()
        if session is None or session.logged_out_at is not None:
            return None
        session.logged_out_at = now
        session.save(update_fields=["logged_out_at"])
    logger.info("Kite session %s logged out", session.pk)
    return session
