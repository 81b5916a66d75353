"""The Kite sessions saved by a login, and the bootstrap tokens Kite refused."""

from __future__ import annotations

from django.db import models


class KiteSession(models.Model):
    """One login at Kite: who, until when, and what became of it. The access token is kept
    only encrypted (``token_encrypted``, Fernet with ``KITE_TOKEN_KEY``) and as a one-way
    fingerprint (``token_fingerprint``) that recognises the token Kite refuses."""

    user_id = models.CharField(max_length=32, help_text="Kite's user id (e.g. AB1234).")
    user_name = models.CharField(max_length=200, blank=True)
    token_encrypted = models.TextField(editable=False)
    token_fingerprint = models.CharField(max_length=64, db_index=True, editable=False)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(help_text="The next 06:00 IST after the login: Kite's daily expiry.")
    refused_at = models.DateTimeField(null=True, blank=True, help_text="When Kite first refused the token.")
    refused_detail = models.CharField(max_length=300, blank=True)
    logged_out_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=150, help_text="Who logged in (a portal user, or a command).")

    class Meta:
        db_table = "kite_sessions"
        ordering = ["-created_at", "-id"]
        get_latest_by = ["created_at", "id"]
        permissions = [("login_kite", "Can log in to Kite for the desk (saves today's access token)")]

    def __str__(self) -> str:
        return f"Kite session of {self.user_id} from {self.created_at:%Y-%m-%d %H:%M}"


class RefusedToken(models.Model):
    """A token Kite refused that is no stored session's (the bootstrap ``KITE_ACCESS_TOKEN`` or
    ``KITE_ACCESS_TOKEN_FILE``): remembered by its fingerprint, never the token."""

    token_fingerprint = models.CharField(max_length=64, unique=True)
    refused_at = models.DateTimeField()
    detail = models.CharField(max_length=300, blank=True)
    source = models.CharField(max_length=60, blank=True, help_text="What found out (ticker, broker, ...).")

    class Meta:
        db_table = "kite_refused_tokens"

    def __str__(self) -> str:
        return f"token {self.token_fingerprint[:12]}... refused at {self.refused_at:%Y-%m-%d %H:%M}"
