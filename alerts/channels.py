"""Where alerts go: Telegram's Bot API and email through Django's email backend.

Each sender either delivers, raises ``ChannelSkipped`` (the channel is not configured) or
raises ``ChannelFailed`` with a reason fit to store on the alert and to log: redacted, so
never the bot token, which is part of every Telegram URL (and so of every error
``requests`` raises about one).
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.mail import EmailMessage, get_connection

from tradingportal.security import redact, secret_register

logger = logging.getLogger(__name__)

TELEGRAM_TEXT_LIMIT = 4096  # characters per message (Bot API)
ERROR_LENGTH = 500


class ChannelSkipped(Exception):
    """The channel is not configured; the reason says what is missing."""


class ChannelFailed(Exception):
    """The channel is configured and did not deliver; the message is already redacted."""


def _reason(text: str) -> str:
    return redact(" ".join(text.split()))[:ERROR_LENGTH]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def telegram_api_url_refusal(url: str) -> str | None:
    """Why ``url`` must not carry the bot token, or None when it may: https, or plain http
    to a loopback address (a local fake in tests, a local relay)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "TELEGRAM_API_URL is not a URL"
    if not host or parts.scheme not in ("https", "http"):
        return "TELEGRAM_API_URL must be an https:// URL"
    if parts.scheme == "http" and not _loopback(host):
        return "TELEGRAM_API_URL must be https:// (plain http only to a loopback address): the bot token is in the URL"
    return None


def telegram_send(*, text: str) -> None:
    """``POST {TELEGRAM_API_URL}/bot{token}/sendMessage`` to ``TELEGRAM_CHAT_ID``, as plain
    text (no parse mode: nothing in an alert can break Telegram's markup)."""
    token, chat_id = settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_CHAT_ID
    if not token or not chat_id:
        missing = " and ".join(
            name
            for name, value in (("TELEGRAM_BOT_TOKEN", token), ("TELEGRAM_CHAT_ID", chat_id))
            if not value
        )
        raise ChannelSkipped(f"not configured: {missing} not set")
    secret_register(token)  # set at run time (or in a test): masked from here on all the same
    base = settings.TELEGRAM_API_URL.rstrip("/")
    refusal = telegram_api_url_refusal(base)
    if refusal:
        raise ChannelFailed(refusal)
    timeout = settings.ALERT_SEND_TIMEOUT
    if len(text) > TELEGRAM_TEXT_LIMIT:
        text = text[: TELEGRAM_TEXT_LIMIT - 1] + "…"
    try:
        response = requests.post(
            f"{base}/bot{token}/sendMessage",
            json={"chat_id": chat_id, "text": text, "disable_web_page_preview": True},
            timeout=(timeout, timeout),
            allow_redirects=False,
        )
    except requests.Timeout:
        raise ChannelFailed(f"Telegram did not answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise ChannelFailed(_reason(f"Telegram unreachable: {type(exc).__name__}: {exc}")) from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        answer = {}
    if response.status_code == 200 and answer.get("ok") is True:
        return
    description = str(answer.get("description") or response.text[:200] or response.reason)
    parameters = answer.get("parameters")
    retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
    suffix = f" (retry after {retry_after} s)" if retry_after is not None else ""
    raise ChannelFailed(_reason(f"Telegram answered HTTP {response.status_code}: {description}{suffix}"))


def email_send(*, subject: str, body: str) -> None:
    """One message to every address of ``ALERT_EMAILS`` through Django's email backend."""
    recipients = list(settings.ALERT_EMAILS)
    if not recipients:
        raise ChannelSkipped("not configured: ALERT_EMAILS not set")
    try:
        connection = get_connection(timeout=settings.ALERT_SEND_TIMEOUT)
        EmailMessage(
            subject=subject,
            body=body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=recipients,
            connection=connection,
        ).send()
    except Exception as exc:  # noqa: BLE001 - any backend, any failure: recorded on the alert
        raise ChannelFailed(_reason(f"email not sent: {type(exc).__name__}: {exc}")) from None
