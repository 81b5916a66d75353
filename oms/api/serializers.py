"""Order API shapes: Kite's place-order fields in, the order as a flat object out."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from rest_framework import serializers

from oms.models import KillSwitchEvent, Order, OrderEvent, Trade, TradingState
from oms.risk import OrderRequest
from oms.updates import SECRET_KEYS  # the keys the audit trail masks when it stores a payload
from tradingportal.security import REDACTED, redact


def price_field(**options: Any) -> Any:
    return serializers.DecimalField(max_digits=18, decimal_places=4, min_value=Decimal(0), **options)


def price_out(**options: Any) -> Any:
    return serializers.DecimalField(max_digits=18, decimal_places=4, read_only=True, **options)


def money_out(**options: Any) -> Any:
    return serializers.DecimalField(max_digits=22, decimal_places=4, read_only=True, **options)


# A credential inside text that is a JSON object or a Python dict's repr ('key': 'value'),
# as a nested payload is stored (the update service keeps nested values as text).
_SECRET_NAMES = "|".join(sorted(SECRET_KEYS))
_QUOTED_SECRET = re.compile(
    rf"""(?P<key>(?P<q>['"])(?:{_SECRET_NAMES})(?P=q)\s*:\s*)(?P<vq>['"])(?:\\.|(?!(?P=vq)).)*(?P=vq)""",
    re.IGNORECASE,
)


def text_redacted(text: str) -> str:
    """``redact`` (known secrets, credential parameters), and quoted credential pairs."""
    text = redact(text)
    return _QUOTED_SECRET.sub(lambda m: f"{m['key']}{m['vq']}{REDACTED}{m['vq']}", text)


def payload_redacted(value: Any) -> Any:
    """A stored broker payload as shown to people (API and admin): credential-named keys
    masked at any depth and every string scrubbed of known secrets. The update service
    redacts when it stores; this holds also for rows stored before a secret was known."""
    if isinstance(value, dict):
        return {
            str(key): REDACTED if str(key).lower() in SECRET_KEYS else payload_redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [payload_redacted(item) for item in value]
    if isinstance(value, str):
        return text_redacted(value)
    return value


class OrderCreateSerializer(serializers.Serializer):
    exchange = serializers.CharField(max_length=16, required=False, allow_blank=True, default="")
    tradingsymbol = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    instrument_token = serializers.IntegerField(required=False, allow_null=True, min_value=1, default=None)
    transaction_type = serializers.ChoiceField(choices=Order.TransactionType.choices)
    quantity = serializers.IntegerField(min_value=1, max_value=10**9)
    product = serializers.ChoiceField(choices=Order.Product.choices)
    order_type = serializers.ChoiceField(choices=Order.OrderType.choices)
    price = price_field(required=False, default=Decimal(0))
    trigger_price = price_field(required=False, default=Decimal(0))
    validity = serializers.ChoiceField(choices=Order.Validity.choices, required=False, default="DAY")
    validity_ttl = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=375, default=None
    )
    variety = serializers.ChoiceField(choices=Order.Variety.choices, required=False, default="regular")
    tag = serializers.CharField(max_length=20, required=False, allow_blank=True, default="")
    strategy = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    stop_loss = price_field(required=False, allow_null=True, default=None,
                                         help_text="Our extension: the stop for the risk-per-trade rule.")  # fmt: skip
    target = price_field(required=False, allow_null=True, default=None,
                                      help_text="Our extension: the target for the reward:risk rule.")  # fmt: skip

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        kind, price, trigger = data["order_type"], data["price"], data["trigger_price"]
        if data["instrument_token"] is None and not (data["exchange"] and data["tradingsymbol"]):
            raise serializers.ValidationError("give instrument_token, or exchange and tradingsymbol")
        if kind in ("LIMIT", "SL") and not price:
            raise serializers.ValidationError({"price": f"a {kind} order needs a price above 0"})
        if kind in ("SL", "SL-M") and not trigger:
            raise serializers.ValidationError(
                {"trigger_price": f"a {kind} order needs a trigger_price above 0"}
            )
        if kind == "MARKET" and price:
            raise serializers.ValidationError(
                {"price": "a MARKET order takes no price (send 0 or leave it out)"}
            )
        if kind in ("MARKET", "LIMIT") and trigger and data["variety"] != "co":
            raise serializers.ValidationError({"trigger_price": f"a {kind} order takes no trigger_price"})
        if data["validity"] == "TTL" and not data["validity_ttl"]:
            raise serializers.ValidationError({"validity_ttl": "TTL validity needs validity_ttl (minutes)"})
        if data["tag"] and not data["tag"].replace("_", "").replace("-", "").isalnum():
            raise serializers.ValidationError({"tag": "letters, digits, - and _ only (at most 20)"})
        return data

    def order_request(self) -> OrderRequest:
        data = self.validated_data
        return OrderRequest(
            transaction_type=data["transaction_type"], quantity=data["quantity"], product=data["product"],
            order_type=data["order_type"], price=data["price"], trigger_price=data["trigger_price"],
            validity=data["validity"], validity_ttl=data["validity_ttl"], variety=data["variety"], tag=data["tag"],
            stop_loss=data["stop_loss"], target=data["target"],
        )  # fmt: skip


class OrderModifySerializer(serializers.Serializer):
    quantity = serializers.IntegerField(min_value=1, max_value=10**9, required=False)
    price = price_field(required=False)
    trigger_price = price_field(required=False)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if not data:
            raise serializers.ValidationError("give quantity, price or trigger_price to change")
        return data


ORDER_FIELDS: tuple[str, ...] = (
    "id", "status", "status_message", "risk_rule", "broker", "broker_order_id", "exchange_order_id",
    "strategy", "exchange", "tradingsymbol", "instrument_token", "transaction_type", "quantity", "product",
    "order_type", "price", "trigger_price", "validity", "validity_ttl", "variety", "tag", "stop_loss", "target",
    "filled_quantity", "pending_quantity", "cancelled_quantity", "average_price", "placed_by", "source",
    "placed_at", "updated_at",
)  # fmt: skip


class RedactedCharField(serializers.CharField):
    """Text a broker sent (a status message): shown scrubbed of known secrets."""

    def to_representation(self, value: Any) -> str:
        return text_redacted(str(value))


class OrderSerializer(serializers.ModelSerializer):
    strategy: Any = serializers.SlugRelatedField(slug_field="name", read_only=True)
    placed_by: Any = serializers.SlugRelatedField(slug_field="username", read_only=True)
    status_message = RedactedCharField(read_only=True)

    class Meta:
        model = Order
        fields: tuple[str, ...] = ORDER_FIELDS
        read_only_fields: tuple[str, ...] = fields


class OrderEventSerializer(serializers.ModelSerializer):
    message = RedactedCharField(read_only=True)
    payload = serializers.SerializerMethodField(help_text="What the broker sent (credentials masked).")

    class Meta:
        model = OrderEvent
        fields = ("at", "kind", "source", "actor", "old_status", "new_status", "message", "payload")
        read_only_fields = fields

    def get_payload(self, event: OrderEvent) -> dict[str, Any]:
        return payload_redacted(event.payload or {})


class OrderDetailSerializer(OrderSerializer):
    events = OrderEventSerializer(many=True, read_only=True)

    class Meta(OrderSerializer.Meta):
        fields: tuple[str, ...] = (*ORDER_FIELDS, "events")
        read_only_fields: tuple[str, ...] = fields


class TradeSerializer(serializers.ModelSerializer):
    strategy: Any = serializers.SlugRelatedField(slug_field="name", read_only=True)
    order_id = serializers.IntegerField(read_only=True)
    broker_order_id = serializers.CharField(source="order.broker_order_id", read_only=True)

    class Meta:
        model = Trade
        fields = ("trade_id", "order_id", "broker_order_id", "strategy", "exchange", "tradingsymbol",
                  "instrument_token", "product", "transaction_type", "quantity", "price", "realised", "filled_at")  # fmt: skip
        read_only_fields = fields


class KillSwitchRequestSerializer(serializers.Serializer):
    engaged = serializers.BooleanField()
    mode = serializers.ChoiceField(choices=["halted", "reducing"], required=False, default="halted")
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    cancel_open = serializers.BooleanField(required=False, default=False)
    square_off = serializers.BooleanField(required=False, default=False)
    strategy = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data["engaged"] and not data["reason"].strip():
            raise serializers.ValidationError({"reason": "say why the kill switch is engaged"})
        return data

    @property
    def state(self) -> str:
        data = self.validated_data
        if not data["engaged"]:
            return TradingState.ACTIVE
        return TradingState.REDUCING if data["mode"] == "reducing" else TradingState.HALTED


class KillSwitchEventSerializer(serializers.ModelSerializer):
    by: Any = serializers.SlugRelatedField(slug_field="username", read_only=True)
    strategy: Any = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = KillSwitchEvent
        fields = ("id", "state", "strategy", "at", "by", "automatic", "rule", "reason", "cancel_open", "square_off",
                  "result")  # fmt: skip
        read_only_fields = fields


# --- answers that are not model rows (the shape the selectors build, as the schema says) ---


class PositionSerializer(serializers.Serializer):
    """A position in Kite's shape (``oms.selectors.position_kite_shape``)."""

    strategy = serializers.CharField(read_only=True)
    tradingsymbol = serializers.CharField(read_only=True)
    exchange = serializers.CharField(read_only=True)
    instrument_token = serializers.IntegerField(read_only=True)
    product = serializers.CharField(read_only=True)
    quantity = serializers.IntegerField(read_only=True, help_text="Net quantity; negative is short, 0 flat.")
    overnight_quantity = serializers.IntegerField(read_only=True)
    multiplier = serializers.IntegerField(read_only=True)
    average_price = price_out()
    close_price = price_out()
    last_price = price_out(allow_null=True)
    pnl = money_out(help_text="realised + unrealised")
    realised = money_out()
    unrealised = money_out()
    m2m = money_out(help_text="The day's mark to market.")
    buy_quantity = serializers.IntegerField(read_only=True)
    buy_value = money_out()
    sell_quantity = serializers.IntegerField(read_only=True)
    sell_value = money_out()
    day_buy_quantity = serializers.IntegerField(read_only=True)
    day_buy_value = money_out()
    day_sell_quantity = serializers.IntegerField(read_only=True)
    day_sell_value = money_out()
    marked_at = serializers.DateTimeField(read_only=True, allow_null=True)


class StrategyPnlSerializer(serializers.Serializer):
    strategy = serializers.CharField(read_only=True)
    mode = serializers.CharField(read_only=True)
    realised = money_out()
    unrealised = money_out()
    pnl = money_out(help_text="Gross: realised + unrealised.")
    charges = money_out(
        allow_null=True, help_text="Zerodha's charges on today's trades; null if not computable."
    )
    net_pnl = money_out(allow_null=True, help_text="pnl - charges.")
    charges_error = serializers.CharField(read_only=True, help_text="Why charges could not be computed.")
    peak_pnl = money_out()
    max_drawdown = money_out()
    orders = serializers.IntegerField(read_only=True)
    trades = serializers.IntegerField(read_only=True)
    rejected = serializers.IntegerField(read_only=True)
    turnover = money_out()


class PnlSerializer(serializers.Serializer):
    """Today's P&L (``oms.selectors.pnl_today``)."""

    day = serializers.DateField(read_only=True, help_text="The trading day (IST).")
    realised = money_out()
    unrealised = money_out()
    pnl = money_out(help_text="Gross: realised + unrealised.")
    charges = money_out(allow_null=True, help_text="Zerodha's charges on today's trades (oms.charges).")
    net_pnl = money_out(allow_null=True, help_text="pnl - charges.")
    strategies = StrategyPnlSerializer(many=True, read_only=True)


class KillSwitchStepSerializer(serializers.Serializer):
    """One engage or release as ``oms.killswitch.kill_switch_status`` describes it."""

    id = serializers.IntegerField(read_only=True)
    state = serializers.ChoiceField(choices=TradingState.choices, read_only=True)
    strategy = serializers.CharField(read_only=True, allow_null=True, help_text="null: the whole desk.")
    at = serializers.DateTimeField(read_only=True)
    by = serializers.CharField(read_only=True, allow_null=True)
    automatic = serializers.BooleanField(read_only=True)
    rule = serializers.CharField(read_only=True)
    reason = serializers.CharField(read_only=True)
    cancel_open = serializers.BooleanField(read_only=True)
    square_off = serializers.BooleanField(read_only=True)
    result = serializers.DictField(read_only=True, help_text="What cancel_open and square_off did (counts).")


class KillSwitchStatusSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=TradingState.choices, read_only=True, help_text="The desk's state."
    )
    engaged = serializers.BooleanField(read_only=True)
    last_event = KillSwitchStepSerializer(read_only=True, allow_null=True)
    strategies = KillSwitchStepSerializer(
        many=True, read_only=True, help_text="Strategies whose own switch is engaged."
    )


class KillSwitchSetSerializer(KillSwitchStatusSerializer):
    event = KillSwitchEventSerializer(read_only=True)


class RefusalSerializer(serializers.Serializer):
    rule = serializers.CharField(read_only=True, help_text="The risk rule that refused the order.")
    detail = serializers.CharField(read_only=True)
    order = OrderSerializer(read_only=True)


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField(read_only=True)


class PostbackSerializer(serializers.Serializer):
    """What the checksum covers; Kite sends the whole order besides (status, quantities...)."""

    order_id = serializers.CharField()
    order_timestamp = serializers.CharField()
    checksum = serializers.CharField(help_text="sha256(order_id + order_timestamp + api_secret), hex")
    status = serializers.CharField(required=False)


class PostbackTakenSerializer(serializers.Serializer):
    status = serializers.CharField(read_only=True)
    known = serializers.BooleanField(read_only=True, help_text="false: not an order of ours (recorded).")
