"""Order and position changes to the dashboards, over the channel layer (best effort:
the database is the truth; a dashboard that misses one reloads the panel on the next)."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)
OMS_GROUP = "oms"


def _send(message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(OMS_GROUP, message)
    except Exception:  # noqa: BLE001 - a dashboard update must never fail an order
        logger.warning("could not tell the dashboards about an order change", exc_info=True)


def order_changed(order: Any) -> None:
    _send(
        {"type": "oms.changed", "order_id": order.pk, "strategy": order.strategy_id, "status": order.status}
    )
