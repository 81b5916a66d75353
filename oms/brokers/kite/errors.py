"""Every kiteconnect and ``requests`` error as one of the OMS's outcomes (``oms.brokers.base``).

kiteconnect raises by Kite's ``error_type`` (an unknown type, e.g. ``MarginException``,
as ``GeneralException``), with the HTTP status as ``code``; ``requests`` errors (timeouts,
refused or dropped connections) pass through it unchanged.
"""

from __future__ import annotations

from django.conf import settings
from kiteconnect import exceptions as kite_errors
from requests import RequestException, Timeout

from oms.brokers.base import BrokerError, BrokerRejected, BrokerUnavailable
from tradingportal.security import redact


class BrokerLoginNeeded(BrokerRejected):
    """Kite refused the access token (it expires every morning): someone must log in again."""


class BrokerRateLimited(BrokerRejected):
    """Refused for a rate limit (ours, counted before sending, or Kite's HTTP 429): not placed."""


# What a call to Kite may raise besides a Kite error: no answer, or one we could not read.
UNREADABLE = (RequestException, ValueError, KeyError, TypeError)
CAUGHT = (kite_errors.KiteException, *UNREADABLE)


def message_of(exc: BaseException) -> str:
    return redact(str(exc) or type(exc).__name__)[:500]


def outcome_of(exc: BaseException) -> BrokerError:
    """``BrokerLoginNeeded``, ``BrokerRateLimited``, ``BrokerRejected`` (Kite said no) or
    ``BrokerUnavailable`` (we do not know what Kite did)."""
    if isinstance(exc, kite_errors.TokenException):
        return BrokerLoginNeeded(f"Kite login needed: {message_of(exc)}")
    if isinstance(exc, kite_errors.KiteException) and getattr(exc, "code", None) == 429:
        return BrokerRateLimited(f"Kite refused the request for its rate limit (HTTP 429): {message_of(exc)}")
    if isinstance(exc, kite_errors.NetworkException | kite_errors.DataException):
        return BrokerUnavailable(f"Kite answered {type(exc).__name__} (HTTP {exc.code}): {message_of(exc)}")
    if isinstance(exc, kite_errors.KiteException):
        return BrokerRejected(f"Kite: {message_of(exc)}")
    if isinstance(exc, Timeout):
        return BrokerUnavailable(f"Kite did not answer within {settings.KITE_REQUEST_TIMEOUT:g} s")
    if isinstance(exc, RequestException):
        return BrokerUnavailable(
            f"Kite could not be reached or dropped the connection ({type(exc).__name__})"
        )
    return BrokerUnavailable(f"Kite's answer could not be read ({type(exc).__name__})")
