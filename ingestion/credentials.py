"""Kite credentials for the feed: the one place that says whether a live feed is
configured and reads today's access token, afresh on every (re)connect."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings

from tradingportal.security import secret_register

logger = logging.getLogger(__name__)

SIMULATOR_CREDENTIALS = ("simulator", "simulator")


def kite_feed_configured() -> bool:
    """True when Kite credentials are configured (an API key and a token or token file):
    the portal then streams from Kite, otherwise from the built-in simulator."""
    return bool(settings.KITE_API_KEY and (settings.KITE_ACCESS_TOKEN or settings.KITE_ACCESS_TOKEN_FILE))


def kite_credentials() -> tuple[str, str]:
    """The API key and today's access token.

    The token comes from ``KITE_ACCESS_TOKEN_FILE`` when set (a file the morning login
    job rewrites), else from ``KITE_ACCESS_TOKEN``.
    """
    token = settings.KITE_ACCESS_TOKEN
    path = settings.KITE_ACCESS_TOKEN_FILE
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            logger.error("cannot read KITE_ACCESS_TOKEN_FILE: %s", exc.strerror)
    secret_register(token)
    return settings.KITE_API_KEY, token
