from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import DecimalField
from django.utils import timezone
from rest_framework import serializers

from instruments.models import Instrument, Source, SyncRun
from instruments.presets import PRESET_CHOICES
from instruments.selectors import MAX_TOKEN


class InstrumentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Instrument
        fields = (
            "id", "instrument_token", "exchange_token", "instrument_key", "tradingsymbol", "name", "last_price",
            "expiry", "strike", "tick_size", "lot_size", "instrument_type", "segment", "exchange", "source",
            "is_active", "stream_mode", "is_listed", "delisted_at", "first_seen_at", "last_seen_at",
        )  # fmt: skip
        read_only_fields = fields


DECIMAL_PLACES = {
    field.name: field.decimal_places
    for field in Instrument._meta.get_fields()
    if isinstance(field, DecimalField)
}


def instrument_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``InstrumentSerializer``'s output for ``.values(*InstrumentSerializer.Meta.fields)``
    rows, without its per-field machinery: the list endpoint's hot path (a test keeps the
    two identical)."""
    shaped = []
    for row in rows:
        out = dict(row)
        for name, places in DECIMAL_PLACES.items():
            value = out.get(name)
            if value is not None:
                out[name] = format(value, f".{places}f")
        if out.get("expiry") is not None:
            out["expiry"] = out["expiry"].isoformat()
        for name in ("delisted_at", "first_seen_at", "last_seen_at"):
            if out.get(name) is not None:
                out[name] = _datetime(out[name])
        shaped.append(out)
    return shaped


def _datetime(value: datetime) -> str:
    text = timezone.localtime(value).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class TokensSerializer(serializers.Serializer):
    tokens = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_TOKEN), allow_empty=False, max_length=10000,
        help_text="Kite instrument tokens of listed instruments.",
    )  # fmt: skip


class ActivationResultSerializer(serializers.Serializer):
    changed = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    not_found = serializers.ListField(child=serializers.IntegerField())
    refused = serializers.ListField(child=serializers.CharField())
    expired = serializers.ListField(child=serializers.CharField())
    active_count = serializers.IntegerField()
    capacity = serializers.IntegerField()


class SyncRequestSerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=Source.choices, default=Source.KITE)  # type: ignore[assignment]
    # Checked by the service (http(s), an allowed dump host, no credentials), not by
    # Django's URL validator, which refuses host names without a dot.
    url = serializers.CharField(
        required=False, allow_blank=True, max_length=2000,
        help_text="Default: the source's configured URL. Only the configured dump hosts (and SYNC_ALLOWED_HOSTS), "
        "with no credentials in the URL.",
    )  # fmt: skip
    # ``filter`` on the wire (as the command's --filter), ``preset`` in the code.
    filter = serializers.ChoiceField(
        choices=PRESET_CHOICES, required=False, allow_blank=True, source="preset",
        help_text="Make the active set exactly this preset; 'all' or empty leaves active flags alone.",
    )  # fmt: skip
    dry_run = serializers.BooleanField(default=False)
    force = serializers.BooleanField(default=False)


class SyncRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = SyncRun
        exclude = ("rejects",)
