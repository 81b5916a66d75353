"""Access tokens encrypted at rest (Fernet, key ``KITE_TOKEN_KEY``) and their fingerprint.

The key is checked when it is needed (a login, a stored token read), never at import: a
portal without it still starts and runs on the bootstrap token.
"""

from __future__ import annotations

import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MAKE_KEY = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'


class TokenKeyError(ImproperlyConfigured):
    """``KITE_TOKEN_KEY`` is missing, is not a Fernet key, or cannot read a stored token."""


def _fernet() -> Fernet:
    key = settings.KITE_TOKEN_KEY
    if not key:
        raise TokenKeyError(
            f"KITE_TOKEN_KEY is not set: the Kite session is stored encrypted with it. Make one with {MAKE_KEY} "
            "and set it in the environment of every portal process."
        )
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise TokenKeyError(
            f"KITE_TOKEN_KEY is not a Fernet key (32 url-safe base64-encoded bytes). Make one with {MAKE_KEY}."
        ) from None


def token_key_problem() -> str:
    """Why the key cannot be used, or "" when it can."""
    try:
        _fernet()
    except TokenKeyError as exc:
        return str(exc)
    return ""


def token_encrypt(token: str) -> str:
    return _fernet().encrypt(token.encode()).decode()


def token_decrypt(ciphertext: str) -> str:
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise TokenKeyError(
            "KITE_TOKEN_KEY cannot decrypt the stored Kite session (was the key changed?): log in to Kite again."
        ) from None


def token_fingerprint(token: str) -> str:
    """A one-way fingerprint of a token (sha256), to recognise it again without keeping it."""
    return hashlib.sha256(token.encode()).hexdigest()
