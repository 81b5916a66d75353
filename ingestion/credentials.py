"""Kite credentials: the one place that says whether a live Kite feed is configured, and
the one token source for the feed and the Kite broker, read afresh on every use.

The token comes from the Kite session store (``kitesession.store.access_token()``): a
valid session saved by a login at the portal wins over the bootstrap token
(``KITE_ACCESS_TOKEN_FILE``, else ``KITE_ACCESS_TOKEN``); "" when none is usable (expired,
refused by Kite, logged out).
"""

from __future__ import annotations

import logging

from django.conf import settings

logger = logging.getLogger(__name__)

SIMULATOR_CREDENTIALS = ("simulator", "simulator")


def kite_feed_configured() -> bool:
    """True when the desk is set up for Kite: an API key, and a way to a token (a token, a
    token file, or ``KITE_API_SECRET`` for logging in from the portal). The portal then
    streams from Kite (saying "Kite login needed" until there is a usable token), never
    from the built-in simulator."""
    return bool(
        settings.KITE_API_KEY
        and (settings.KITE_ACCESS_TOKEN or settings.KITE_ACCESS_TOKEN_FILE or settings.KITE_API_SECRET)
    )


def kite_credentials() -> tuple[str, str]:
    """The API key and the access token to use now ("" when there is none usable).

    Raises ``kitesession.crypto.TokenKeyError`` when a stored session cannot be read
    (``KITE_TOKEN_KEY`` missing or not the key it was saved with)."""
    from kitesession.store import access_token

    return settings.KITE_API_KEY, access_token()
