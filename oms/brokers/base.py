"""The broker interface the OMS talks to, and the outcomes a broker call can have.

A broker turns our order into the broker's and back: ``place``, ``modify`` and
``cancel`` return an ``OrderUpdate`` (what the broker says now) that the caller applies
through the one update service; ``orders``/``trades``/``positions`` read the broker's
books for reconciliation. A broker never writes orders, trades or positions itself.

Errors map to the OMS's own outcomes, never to an unknown state:
``BrokerRejected`` (the broker refused: the order is REJECTED with its message),
``BrokerUnavailable`` (we do not know whether the broker has it: it stays
``PUT ORDER REQ RECEIVED`` until a poll or a postback tells).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from oms.updates import OrderUpdate


class BrokerError(Exception):
    pass


class BrokerRejected(BrokerError):
    """The broker refused the request; the message says why."""


class BrokerUnavailable(BrokerError):
    """The broker could not be reached or did not answer: the outcome is unknown."""


class Broker(Protocol):
    name: str

    def place(self, order: Any) -> OrderUpdate: ...

    def modify(self, order: Any, *, quantity: int | None, price: Decimal | None,
               trigger_price: Decimal | None) -> OrderUpdate: ...  # fmt: skip

    def cancel(self, order: Any) -> OrderUpdate: ...

    def orders(self) -> list[dict[str, Any]]: ...

    def trades(self) -> list[dict[str, Any]]: ...

    def positions(self) -> list[dict[str, Any]]: ...
