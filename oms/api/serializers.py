"""Order API shapes: Kite's place-order fields in, the order as a flat object out."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rest_framework import serializers

from oms.models import KillSwitchEvent, Order, OrderEvent, Trade, TradingState
from oms.risk import OrderRequest


def price_field(**options: Any) -> Any:
    return serializers.DecimalField(max_digits=18, decimal_places=4, min_value=Decimal(0), **options)


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


class OrderSerializer(serializers.ModelSerializer):
    strategy: Any = serializers.SlugRelatedField(slug_field="name", read_only=True)
    placed_by: Any = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Order
        fields: tuple[str, ...] = ORDER_FIELDS
        read_only_fields: tuple[str, ...] = fields


class OrderEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderEvent
        fields = ("at", "kind", "source", "actor", "old_status", "new_status", "message", "payload")
        read_only_fields = fields


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
