"""The instrument master: what exists (listed), what streams (active), and each sync."""

from django.db import models
from django.db.models import Q


class Source(models.TextChoices):
    KITE = "kite", "Kite"
    UPSTOX = "upstox", "Upstox"


class StreamMode(models.TextChoices):
    LTP = "ltp", "LTP"
    QUOTE = "quote", "Quote"
    FULL = "full", "Full (with depth)"


class Instrument(models.Model):
    """One contract from a broker's dump.

    Identity is the contract (source, exchange, tradingsymbol, instrument type, expiry,
    strike): Kite reuses tokens, so ``instrument_token`` is unique only among listed
    rows. A row missing from the latest dump is delisted (never deleted), so orders and
    ticks that point at it keep pointing at the same contract.
    """

    source = models.CharField(max_length=8, choices=Source.choices, default=Source.KITE)
    instrument_token = models.BigIntegerField(
        null=True, blank=True, help_text="Kite's token; Upstox rows have none."
    )
    exchange_token = models.BigIntegerField(null=True, blank=True)
    instrument_key = models.CharField(max_length=64, blank=True, default="", help_text="Upstox's own key.")
    tradingsymbol = models.CharField(max_length=64)
    name = models.CharField(max_length=128, blank=True, default="")
    last_price = models.DecimalField(max_digits=18, decimal_places=4, default=0)
    expiry = models.DateField(null=True, blank=True)
    strike = models.DecimalField(max_digits=18, decimal_places=4, default=0)
    tick_size = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    lot_size = models.IntegerField(default=0)
    instrument_type = models.CharField(max_length=16)
    segment = models.CharField(max_length=32)
    exchange = models.CharField(max_length=16)

    is_active = models.BooleanField(default=False, help_text="Streams on the live feed.")
    stream_mode = models.CharField(max_length=8, choices=StreamMode.choices, default=StreamMode.QUOTE)
    is_listed = models.BooleanField(default=True, help_text="Present in the latest dump of its source.")
    delisted_at = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "instruments"
        ordering = ["exchange", "tradingsymbol"]
        constraints = [
            models.UniqueConstraint(
                fields=["instrument_token"],
                condition=Q(source="kite", is_listed=True),
                name="instruments_listed_kite_token_uniq",
            ),
            models.UniqueConstraint(
                fields=["instrument_key"],
                condition=Q(source="upstox", is_listed=True),
                name="instruments_listed_upstox_key_uniq",
            ),
            models.CheckConstraint(
                condition=Q(is_listed=True) | Q(is_active=False),
                name="instruments_delisted_never_active",
                violation_error_message="A delisted instrument cannot be active.",
            ),
            models.CheckConstraint(
                condition=Q(source="upstox") | Q(instrument_token__isnull=False),
                name="instruments_kite_has_token",
                violation_error_message="A Kite instrument needs its instrument_token.",
            ),
        ]
        indexes = [
            models.Index(fields=["source", "exchange", "tradingsymbol"], name="instruments_contract_idx"),
            models.Index(fields=["exchange", "segment"], name="instruments_exch_seg_idx"),
            models.Index(fields=["expiry"], name="instruments_expiry_idx"),
            models.Index(fields=["name"], name="instruments_name_idx"),
            models.Index(fields=["is_active"], condition=Q(is_active=True), name="instruments_active_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.exchange}:{self.tradingsymbol}"


class SyncRun(models.Model):
    """One run of ``sync_instruments`` (command, schedule or admin), whatever its outcome."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        OK = "ok", "OK"
        DRY_RUN = "dry_run", "Dry run"
        FAILED = "failed", "Failed"
        REFUSED = "refused", "Refused"

    source = models.CharField(max_length=8, choices=Source.choices)
    input = models.CharField(max_length=500, help_text="File path or URL (credentials removed).")
    scope = models.CharField(max_length=200, blank=True, default="", help_text="Exchanges the dump covers.")
    preset = models.CharField(
        max_length=16, blank=True, default="", help_text="The active-set preset applied (--filter)."
    )
    dry_run = models.BooleanField(default=False)
    forced = models.BooleanField(default=False)
    triggered_by = models.CharField(max_length=64, blank=True, default="")
    host = models.CharField(max_length=255, blank=True, default="", help_text="Where the sync ran.")
    pid = models.IntegerField(null=True, blank=True, help_text="The process that ran the sync.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    exit_code = models.SmallIntegerField(null=True, blank=True)
    message = models.TextField(blank=True, default="")
    rows_read = models.IntegerField(default=0)
    inserted = models.IntegerField(default=0)
    updated = models.IntegerField(default=0)
    unchanged = models.IntegerField(default=0)
    delisted = models.IntegerField(default=0)
    relisted = models.IntegerField(default=0)
    rejected = models.IntegerField(default=0)
    activated = models.IntegerField(default=0)
    deactivated = models.IntegerField(default=0)
    rejects = models.JSONField(
        default=list, blank=True, help_text="The first rejected rows: line and reason."
    )
    duration_ms = models.IntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["source", "status", "-started_at"], name="syncrun_recent_idx")]
        permissions = [("run_sync", "Can start an instrument sync")]

    def __str__(self) -> str:
        return f"{self.source} sync {self.started_at:%Y-%m-%d %H:%M} ({self.status})"
