"""Orders, fills, positions, the audit trail, the kill switch and daily statistics.

Money and prices are ``Decimal`` columns (prices to 4 places, as Kite's CDS prices need;
values and P&L to 4; the open cost of a position to 8), quantities are integers in
units. Nothing here writes status, trades or positions: ``oms.services`` does, through
the one update service (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from oms import state

ZERO = Decimal(0)


def price_field(**options: Any) -> Any:
    return models.DecimalField(max_digits=18, decimal_places=4, **options)


def value_field(**options: Any) -> Any:
    return models.DecimalField(max_digits=22, decimal_places=4, **options)


def cost_field(**options: Any) -> Any:
    return models.DecimalField(max_digits=26, decimal_places=8, **options)


class Mode(models.TextChoices):
    PAPER = "PAPER", "Paper (simulated fills)"
    LIVE = "LIVE", "Live (orders go to Kite)"


class Strategy(models.Model):
    """Who an order is for: its mode (paper or live), capital and risk limits.

    A blank limit means the global one from settings (``OMS_*``). Credentials alone never
    make a strategy live: only ``mode`` does, set by a person with the permission.
    """

    name = models.SlugField(max_length=64, unique=True)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.PAPER)
    enabled = models.BooleanField(default=True, help_text="Disabled strategies cannot place orders.")
    capital = value_field(default=ZERO, help_text="Capital for the risk-per-trade rule (rupees).")
    description = models.CharField(max_length=200, blank=True, default="")
    # Per-strategy risk limits; blank = the global setting.
    max_order_quantity = models.PositiveIntegerField(null=True, blank=True)
    max_order_value = value_field(null=True, blank=True)
    max_position_quantity = models.PositiveIntegerField(null=True, blank=True)
    max_open_positions = models.PositiveIntegerField(null=True, blank=True)
    max_risk_per_trade_percent = models.DecimalField(max_digits=6, decimal_places=3, null=True, blank=True)
    min_reward_risk = models.DecimalField(max_digits=8, decimal_places=3, null=True, blank=True)
    max_daily_loss = value_field(null=True, blank=True)
    max_drawdown = value_field(null=True, blank=True)
    max_position_loss = value_field(null=True, blank=True)
    price_band_percent = models.DecimalField(max_digits=6, decimal_places=3, null=True, blank=True)
    max_order_to_trade_ratio = models.DecimalField(max_digits=8, decimal_places=2, null=True, blank=True)
    # Kite (LIVE strategies).
    algo_id = models.CharField(
        max_length=32,
        blank=True,
        default="",
        help_text="The exchange's algo ID, sent with every order (SEBI).",
    )
    market_protection = models.DecimalField(
        max_digits=6, decimal_places=2, null=True, blank=True,
        help_text="MARKET and SL-M orders: -1 (blank) for the exchange's automatic protection, or a percent (0-100].",
    )  # fmt: skip
    allow_autoslice = models.BooleanField(
        default=False,
        help_text="Send F&O orders above the freeze quantity sliced by Kite, instead of refusing them.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "strategies"
        ordering = ["name"]
        permissions = [("change_strategy_mode", "Can switch a strategy between paper and live")]
        constraints = [
            models.CheckConstraint(
                condition=Q(market_protection__isnull=True)
                | Q(market_protection=-1)
                | (Q(market_protection__gt=0) & Q(market_protection__lte=100)),
                name="oms_strategy_market_protection",
                violation_error_message="Market protection is -1 (automatic) or a percent above 0, at most 100.",
            )
        ]

    def __str__(self) -> str:
        return self.name


class StrategyModeChange(models.Model):
    """Each switch of a strategy between PAPER and LIVE (``oms.strategy_mode``): who, when,
    from what to what, and what the person confirmed (the limits and Kite settings as the
    confirmation page showed them). Append-only."""

    strategy = models.ForeignKey(Strategy, on_delete=models.PROTECT, related_name="mode_changes")
    at = models.DateTimeField(db_index=True)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    by_username = models.CharField(max_length=150, help_text="Kept when the user is deleted.")
    old_mode = models.CharField(max_length=8, choices=Mode.choices)
    new_mode = models.CharField(max_length=8, choices=Mode.choices)
    note = models.TextField(blank=True, default="")
    confirmed = models.JSONField(
        default=dict, blank=True, help_text="The limits, capital and Kite settings the person confirmed."
    )

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "strategy mode change"

    def __str__(self) -> str:
        return (
            f"{self.strategy} {self.old_mode} -> {self.new_mode} at "
            f"{timezone.localtime(self.at):%Y-%m-%d %H:%M:%S} IST by {self.by_username}"
        )


class StrategyAccess(models.Model):
    """Ties an API user to one strategy: that user places and sees only its orders."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oms_access")
    strategy = models.ForeignKey(Strategy, on_delete=models.CASCADE, related_name="users")

    class Meta:
        verbose_name = "API user's strategy"
        verbose_name_plural = "API users' strategies"

    def __str__(self) -> str:
        return f"{self.user} -> {self.strategy}"


class Order(models.Model):
    # Labels as Kite writes them (without one, Django would show "Mis", "Slm", "Ioc").
    class TransactionType(models.TextChoices):
        BUY = "BUY", "BUY"
        SELL = "SELL", "SELL"

    class Product(models.TextChoices):
        CNC = "CNC", "CNC"
        NRML = "NRML", "NRML"
        MIS = "MIS", "MIS"
        MTF = "MTF", "MTF"

    class OrderType(models.TextChoices):
        MARKET = "MARKET", "MARKET"
        LIMIT = "LIMIT", "LIMIT"
        SL = "SL", "SL"
        SLM = "SL-M", "SL-M"

    class Validity(models.TextChoices):
        DAY = "DAY", "DAY"
        IOC = "IOC", "IOC"
        TTL = "TTL", "TTL"

    class Variety(models.TextChoices):
        REGULAR = "regular", "regular"
        AMO = "amo", "amo"
        CO = "co", "co"
        ICEBERG = "iceberg", "iceberg"

    STATUS_CHOICES = [(s, s) for s in sorted(state.ALL)]

    strategy = models.ForeignKey(Strategy, on_delete=models.PROTECT, related_name="orders")
    placed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="oms_orders"
    )
    source = models.CharField(max_length=32, default="api", help_text="api, admin, kill_switch, risk_monitor")
    instrument = models.ForeignKey(
        "instruments.Instrument", on_delete=models.PROTECT, related_name="orders",
        help_text="The listed contract at placement.",
    )  # fmt: skip
    exchange = models.CharField(max_length=16)
    tradingsymbol = models.CharField(max_length=64)
    instrument_token = models.BigIntegerField()
    transaction_type = models.CharField(max_length=4, choices=TransactionType.choices)
    quantity = models.PositiveIntegerField()
    product = models.CharField(max_length=4, choices=Product.choices)
    order_type = models.CharField(max_length=6, choices=OrderType.choices)
    price = price_field(default=ZERO)
    trigger_price = price_field(default=ZERO)
    validity = models.CharField(max_length=3, choices=Validity.choices, default=Validity.DAY)
    validity_ttl = models.PositiveIntegerField(null=True, blank=True, help_text="Minutes, for TTL.")
    variety = models.CharField(max_length=8, choices=Variety.choices, default=Variety.REGULAR)
    tag = models.CharField(max_length=20, blank=True, default="")
    # Our own extensions for the risk rules (not sent to the broker).
    stop_loss = price_field(null=True, blank=True)
    target = price_field(null=True, blank=True)

    broker = models.CharField(max_length=8, default="paper")
    # NULL until the broker answers: unique only once set (a partial unique index).
    broker_order_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    exchange_order_id = models.CharField(max_length=64, blank=True, default="")
    status = models.CharField(max_length=32, choices=STATUS_CHOICES, default=state.PUT_ORDER_REQ_RECEIVED)
    status_message = models.TextField(blank=True, default="")
    risk_rule = models.CharField(max_length=32, blank=True, default="", help_text="The rule that refused it.")
    filled_quantity = models.PositiveIntegerField(default=0)
    pending_quantity = models.PositiveIntegerField(default=0)
    cancelled_quantity = models.PositiveIntegerField(default=0)
    average_price = price_field(default=ZERO)
    fill_value = value_field(default=ZERO, help_text="Sum of quantity x price of the fills.")
    idempotency_key = models.CharField(max_length=128)
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    status_sequence = models.BigIntegerField(
        default=0, help_text="Sequence of the last applied broker status (stale updates are ignored)."
    )
    paper_rested_at = models.DateTimeField(
        null=True, blank=True,
        help_text="Paper broker: when the order first rested against a price that did not reach it. From then "
        "on it fills at its own limit when the market comes to it; until then (placed without a price, an AMO, "
        "just modified) the first price it meets fills it as a marketable order, at the market. A DAY order "
        "ends with the trading day it rested in.",
    )  # fmt: skip
    placed_at = models.DateTimeField(db_index=True)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-placed_at", "-id"]
        permissions = [("place_order", "Can place, modify and cancel orders")]
        constraints = [
            models.UniqueConstraint(
                fields=["placed_by", "idempotency_key"], name="oms_order_idempotency_uniq"
            ),
            # NULLs are distinct in a unique constraint: the system's own orders (kill switch,
            # risk monitor) need their own.
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=Q(placed_by__isnull=True),
                name="oms_order_system_idempotency_uniq",
            ),
            models.UniqueConstraint(
                fields=["broker", "broker_order_id"],
                condition=Q(broker_order_id__isnull=False),
                name="oms_order_broker_id_uniq",
            ),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="oms_order_quantity_positive"),
            models.CheckConstraint(
                condition=Q(filled_quantity__lte=models.F("quantity")), name="oms_order_never_overfilled"
            ),
        ]
        indexes = [
            models.Index(fields=["strategy", "-placed_at"], name="oms_order_strategy_idx"),
            # The working orders of a strategy (the pre-trade rules count them on every placement).
            models.Index(
                fields=["strategy", "instrument"],
                condition=Q(status__in=sorted(state.WORKING | state.PENDING)),
                name="oms_order_strategy_working_idx",
            ),
            models.Index(
                fields=["broker", "instrument_token"],
                condition=Q(status__in=sorted(state.WORKING | state.PENDING)),
                name="oms_order_working_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.transaction_type} {self.quantity} {self.exchange}:{self.tradingsymbol}"

    @property
    def is_terminal(self) -> bool:
        return state.is_terminal(self.status)


class Trade(models.Model):
    """One fill. ``trade_id`` is the broker's (the paper broker generates them alike)."""

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="trades")
    broker = models.CharField(max_length=8, default="paper")
    trade_id = models.CharField(max_length=64)
    strategy = models.ForeignKey(Strategy, on_delete=models.PROTECT, related_name="trades")
    instrument = models.ForeignKey("instruments.Instrument", on_delete=models.PROTECT, related_name="trades")
    exchange = models.CharField(max_length=16)
    tradingsymbol = models.CharField(max_length=64)
    instrument_token = models.BigIntegerField()
    product = models.CharField(max_length=4)
    transaction_type = models.CharField(max_length=4)
    quantity = models.PositiveIntegerField()
    price = price_field()
    realised = value_field(default=ZERO, help_text="P&L this fill realised.")
    filled_at = models.DateTimeField(db_index=True)
    exchange_order_id = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["-filled_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["broker", "trade_id"], name="oms_trade_broker_id_uniq"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="oms_trade_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.trade_id}: {self.transaction_type} {self.quantity} {self.tradingsymbol} @ {self.price}"


class Position(models.Model):
    """Net position per strategy, instrument and product (see ``oms.pnl``)."""

    strategy = models.ForeignKey(Strategy, on_delete=models.PROTECT, related_name="positions")
    instrument = models.ForeignKey(
        "instruments.Instrument", on_delete=models.PROTECT, related_name="positions"
    )
    exchange = models.CharField(max_length=16)
    tradingsymbol = models.CharField(max_length=64)
    instrument_token = models.BigIntegerField()
    product = models.CharField(max_length=4)
    quantity = models.IntegerField(default=0, help_text="Net quantity; negative is short.")
    average_price = price_field(default=ZERO)
    open_cost = cost_field(default=ZERO)
    buy_quantity = models.PositiveIntegerField(default=0)
    buy_value = value_field(default=ZERO)
    sell_quantity = models.PositiveIntegerField(default=0)
    sell_value = value_field(default=ZERO)
    realised = value_field(default=ZERO)
    last_price = price_field(null=True, blank=True)
    unrealised = value_field(default=ZERO)
    m2m = value_field(default=ZERO, help_text="The day's mark to market.")
    # The day's own trades and what was carried in (for the day's MTM).
    day = models.DateField(null=True, blank=True, help_text="The trading day the day_* fields are for.")
    day_buy_quantity = models.PositiveIntegerField(default=0)
    day_buy_value = value_field(default=ZERO)
    day_sell_quantity = models.PositiveIntegerField(default=0)
    day_sell_value = value_field(default=ZERO)
    overnight_quantity = models.IntegerField(default=0)
    close_price = price_field(default=ZERO, help_text="The mark the overnight quantity came in at.")
    marked_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["strategy", "exchange", "tradingsymbol"]
        constraints = [
            models.UniqueConstraint(fields=["strategy", "instrument", "product"], name="oms_position_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.strategy} {self.exchange}:{self.tradingsymbol} {self.product} {self.quantity}"

    @property
    def pnl(self) -> Decimal:
        return self.realised + self.unrealised


class FreezeLimit(models.Model):
    """The exchange's freeze quantity for F&O orders on one underlying: a single order may
    not be larger (Kite can slice it: ``Strategy.allow_autoslice``)."""

    exchange = models.CharField(max_length=16, default="NFO")
    underlying = models.CharField(
        max_length=64, help_text="As the instrument dump's name: NIFTY, BANKNIFTY, RELIANCE."
    )
    freeze_quantity = models.PositiveIntegerField(help_text="Units (not lots).")
    source = models.CharField(max_length=32, default="admin", help_text="seed, file (NSE's), or admin.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["exchange", "underlying"]
        constraints = [
            models.UniqueConstraint(fields=["exchange", "underlying"], name="oms_freezelimit_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.exchange}:{self.underlying} freeze {self.freeze_quantity}"


class ReconciliationRun(models.Model):
    """One comparison of the broker's orders, trades and positions with ours."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        OK = "ok", "OK"
        UNREACHABLE = "unreachable", "Broker unreachable"
        FAILED = "failed", "Failed"

    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    triggered_by = models.CharField(max_length=32, default="schedule")
    counts = models.JSONField(default=dict, blank=True, help_text="What was compared, found and fixed.")
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"reconciliation {self.started_at:%Y-%m-%d %H:%M:%S} ({self.status})"


class ReconciliationIssue(models.Model):
    """A difference between the broker and us that waits for a person (safe ones are fixed
    through the update service and only logged). The same unresolved difference is
    recorded once (``fingerprint``)."""

    class Resolution(models.TextChoices):
        OPEN = "", "Unresolved"
        ACCEPT_BROKER = "accept_broker", "Accepted the broker's side"
        ACCEPT_OURS = "accept_ours", "Kept ours (with a note)"
        DISMISSED = "dismissed", "Dismissed"

    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="issues")
    kind = models.CharField(max_length=32)
    fingerprint = models.CharField(max_length=128)
    strategy = models.ForeignKey(Strategy, null=True, blank=True, on_delete=models.SET_NULL)
    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.SET_NULL)
    instrument = models.ForeignKey("instruments.Instrument", null=True, blank=True, on_delete=models.SET_NULL)
    exchange = models.CharField(max_length=16, blank=True, default="")
    tradingsymbol = models.CharField(max_length=64, blank=True, default="")
    ours = models.JSONField(default=dict, blank=True)
    broker = models.JSONField(default=dict, blank=True)
    resolved = models.BooleanField(default=False)
    resolution = models.CharField(max_length=16, choices=Resolution.choices, blank=True, default="")
    note = models.TextField(blank=True, default="")
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)
    seen_at = models.DateTimeField(help_text="The last run that still found it.")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["fingerprint"], condition=Q(resolved=False), name="oms_reconissue_open_uniq"
            )
        ]

    def __str__(self) -> str:
        where = f" {self.exchange}:{self.tradingsymbol}" if self.tradingsymbol else ""
        return f"{self.kind}{where}"


class OrderEvent(models.Model):
    """The append-only audit trail: every state change, fill and refusal, and its cause."""

    class Kind(models.TextChoices):
        PLACED = "placed"
        RISK_REJECTED = "risk_rejected"
        STATUS = "status"
        FILL = "fill"
        DUPLICATE_FILL = "duplicate_fill"
        CONFLICTING_FILL = "conflicting_fill"
        OVERFILL = "overfill"
        ILLEGAL_TRANSITION = "illegal_transition"
        STALE_UPDATE = "stale_update"
        MODIFY = "modify"
        MODIFY_REFUSED = "modify_refused"
        CANCEL = "cancel"
        CANCEL_REFUSED = "cancel_refused"
        BROKER_ERROR = "broker_error"
        WARNING = "warning"
        UNKNOWN_ORDER = "unknown_order"

    class Source(models.TextChoices):
        API = "api", "API user"
        ADMIN = "admin", "Admin"
        PAPER = "paper", "Paper broker"
        POSTBACK = "postback", "Kite postback"
        TICKER = "ticker", "Ticker order update"
        POLL = "poll", "Order-book poll"
        RECONCILE = "reconcile", "Reconciliation"
        RISK = "risk", "Risk validator"
        RISK_MONITOR = "risk_monitor", "Risk monitor"
        KILL_SWITCH = "kill_switch", "Kill switch"
        KITE = "kite", "Kite (placement answer)"
        SYSTEM = "system", "System"

    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    broker_order_id = models.CharField(max_length=64, blank=True, default="")
    at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=24, choices=Kind.choices)
    source = models.CharField(max_length=16, choices=Source.choices)
    actor = models.CharField(max_length=150, blank=True, default="", help_text="User name, or the process.")
    old_status = models.CharField(max_length=32, blank=True, default="")
    new_status = models.CharField(max_length=32, blank=True, default="")
    message = models.TextField(blank=True, default="")
    payload = models.JSONField(default=dict, blank=True, help_text="What the broker sent (redacted).")

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["order", "at"], name="oms_event_order_idx")]

    def __str__(self) -> str:
        return f"{timezone.localtime(self.at):%H:%M:%S} {self.kind} {self.old_status}->{self.new_status}"


class TradingState(models.TextChoices):
    ACTIVE = "ACTIVE", "Active: orders flow"
    REDUCING = "REDUCING", "Reducing: only orders that reduce a position"
    HALTED = "HALTED", "Halted: no new orders"


class KillSwitchEvent(models.Model):
    """Each engage or release of the kill switch; the latest one is the trading state."""

    state = models.CharField(max_length=8, choices=TradingState.choices)
    strategy = models.ForeignKey(
        Strategy, null=True, blank=True, on_delete=models.CASCADE, related_name="kill_switch_events",
        help_text="Blank: the whole desk.",
    )  # fmt: skip
    at = models.DateTimeField(db_index=True)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    automatic = models.BooleanField(default=False)
    rule = models.CharField(max_length=32, blank=True, default="", help_text="The rule that engaged it.")
    reason = models.TextField(blank=True, default="")
    cancel_open = models.BooleanField(default=False)
    square_off = models.BooleanField(default=False)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        permissions = [("operate_kill_switch", "Can engage and release the kill switch")]

    def __str__(self) -> str:
        who = "automatic" if self.automatic else (self.by.get_username() if self.by else "system")
        return f"{self.state} at {timezone.localtime(self.at):%Y-%m-%d %H:%M:%S} IST by {who}"

    @property
    def engaged(self) -> bool:
        return self.state != TradingState.ACTIVE


class DailyStats(models.Model):
    """Per strategy and trading day: counts, P&L and the day's peak (for drawdown)."""

    strategy = models.ForeignKey(Strategy, on_delete=models.CASCADE, related_name="daily_stats")
    day = models.DateField()
    orders = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    trades = models.PositiveIntegerField(default=0)
    turnover = value_field(default=ZERO)
    realised = value_field(default=ZERO)
    unrealised = value_field(default=ZERO)
    peak_pnl = value_field(default=ZERO)
    max_drawdown = value_field(default=ZERO)
    charges = value_field(
        null=True, blank=True, help_text="Zerodha's charges on the day's trades (end of day)."
    )
    charges_detail = models.JSONField(
        default=dict, blank=True, help_text="Each charge, as a contract note has it."
    )
    closed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the end-of-day run wrote the day."
    )
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-day", "strategy"]
        verbose_name_plural = "daily stats"
        constraints = [models.UniqueConstraint(fields=["strategy", "day"], name="oms_dailystats_uniq")]

    def __str__(self) -> str:
        return f"{self.strategy} {self.day}"

    @property
    def pnl(self) -> Decimal:
        return self.realised + self.unrealised

    @property
    def net_pnl(self) -> Decimal | None:
        return self.pnl - self.charges if self.charges is not None else None

    @property
    def order_to_trade_ratio(self) -> Decimal | None:
        return (Decimal(self.orders) / self.trades).quantize(Decimal("0.01")) if self.trades else None
