"""JSON bodies for the OMS API: numbers parsed as ``Decimal`` (a price never passes
through float), and nothing ambiguous taken: ``NaN``/``Infinity`` (not JSON) and an
object naming a field twice (which value would the risk rules have checked?) are refused.

The body's size is bounded by Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (DRF reads it
through ``request.body``); the views answer 413 past it (``oms.api.views``).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key, value in pairs:
        if key in body:
            raise ValueError(f"the field {key[:40]!r} is given twice")
        body[key] = value
    return body


class DecimalJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json.loads(
                stream.read().decode(encoding),
                parse_float=Decimal,
                parse_constant=_refuse_constant,
                object_pairs_hook=_unique_keys,
            )
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
