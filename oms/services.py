"""Order management services. The OMS issue fills this in; the feed already calls the hook."""

import logging
from typing import Any

logger = logging.getLogger(__name__)


def order_update_from_feed(*, data: dict[str, Any]) -> None:
    """An order update (postback) that arrived on the ticker. A no-op until the OMS lands."""
    logger.debug(
        "order update from the feed: order_id=%s status=%s", data.get("order_id"), data.get("status")
    )
