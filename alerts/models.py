"""An alert: one condition (``kind`` + ``key``) that a person must hear about, what it says,
where it was sent and how that went. Written only by ``alerts.services``."""

from __future__ import annotations

from django.db import models


class Kind(models.TextChoices):
    KILL_SWITCH = "kill_switch", "Kill switch engaged"
    ORDER_REJECTED = "order_rejected", "LIVE order rejected"
    RECONCILIATION = "reconciliation", "Reconciliation issue"
    KITE_LOGIN = "kite_login", "Kite login needed"
    FEED_DOWN = "feed_down", "Market feed down"
    SQUARE_OFF = "square_off", "Square-off failed"


class Severity(models.TextChoices):
    INFO = "info", "info"
    WARNING = "warning", "warning"
    CRITICAL = "critical", "critical"


class Outcome(models.TextChoices):
    PENDING = "pending", "pending"  # not tried yet (queued, or waiting for a retry)
    SENT = "sent", "sent"
    FAILED = "failed", "failed"
    SKIPPED = "skipped", "skipped"  # the channel is not configured


CHANNELS = ("telegram", "email")


class Alert(models.Model):
    kind = models.CharField(max_length=32, choices=Kind.choices)
    key = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="What the alert is about: the same kind and key is one condition.",
    )
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.WARNING)
    subject = models.CharField(max_length=200)
    body = models.TextField(blank=True, default="")
    link = models.CharField(max_length=500, blank=True, default="", help_text="The admin page that shows it.")
    created_at = models.DateTimeField(
        db_index=True, help_text="First raised; repeats are counted until the window ends."
    )
    last_raised_at = models.DateTimeField()
    repeats = models.PositiveIntegerField(
        default=0, help_text="Raised again inside the repeat window (not sent)."
    )
    telegram_outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.PENDING)
    telegram_error = models.TextField(blank=True, default="")
    email_outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.PENDING)
    email_error = models.TextField(blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True, help_text="Delivered on a channel (the last time).")
    attempts = models.PositiveIntegerField(default=0, help_text="Sending runs so far.")
    attempted_at = models.DateTimeField(null=True, blank=True)
    sending_since = models.DateTimeField(
        null=True, blank=True, help_text="A worker is sending it now (cleared when it is done)."
    )

    class Meta:
        ordering = ("-created_at", "-pk")
        indexes = [models.Index(fields=["kind", "key", "-created_at"], name="alert_condition")]
        permissions = [("resend_alert", "Can send an alert again")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.subject}"

    def outcome(self, channel: str) -> str:
        return str(getattr(self, f"{channel}_outcome"))

    @property
    def delivered(self) -> bool:
        """Sent on every channel that was tried (and on at least one)."""
        outcomes = {self.outcome(channel) for channel in CHANNELS}
        return Outcome.SENT in outcomes and outcomes <= {Outcome.SENT, Outcome.SKIPPED}
