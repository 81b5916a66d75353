"""A fake Kite Connect REST server: a real local HTTP server that speaks Kite's API as
kiteconnect calls it, reached through ``KITE_API_URL`` (never by patching kiteconnect).

It answers with the shapes of Kite's documented responses (zerodha/kiteconnect-mocks):
``{"status": "success", "data": ...}``, errors ``{"status": "error", "message": ...,
"error_type": ...}`` with their HTTP status; numbers are JSON numbers, written from exact
decimals (so a test can send the text a float would mangle), timestamps Kite's
``YYYY-MM-DD HH:MM:SS`` in IST. Every request must carry ``X-Kite-Version: 3`` and
``Authorization: token api_key:access_token`` with a live token.

It keeps its own order book: orders go ``PUT ORDER REQ RECEIVED`` -> ``VALIDATION
PENDING`` -> ``OPEN PENDING`` -> ``OPEN`` (``TRIGGER PENDING`` for stops, ``AMO REQ
RECEIVED`` for AMOs); MARKET orders fill at once at ``prices[exchange:symbol]`` (default
100), the others when the test calls ``fill``. Autoslice orders are split at
``freeze[exchange:symbol]``; ``refuse_slices`` refuses some slices for margin. Every request
is recorded (``calls``), and ``fail_next`` makes the next matching call(s) fail: an error
answer (``token``, ``permission``, ``input``, ``order``, ``margin``, ``general``, ``429``,
``500``, ``502``, ``503``, ``html``), ``timeout`` (no answer until the test releases it or
the server stops) or ``drop`` (the connection closed without an answer); with
``accept=True`` the request is carried out first (the order exists at Kite, the client
never hears).

The session: ``POST /session/token`` exchanges a request token (``issue_request_token``,
or the login page of ``tests/fakes/kite_login.py``) checked against Kite's checksum
``sha256(api_key + request_token + api_secret)`` for a new access token it then accepts;
``DELETE /session/token`` invalidates one; ``GET /user/profile`` names ``user_id``.
``rollover`` kills every live token (each then gets ``403 TokenException`` "rollover").

For reconciliation: ``place_direct`` puts an order in the book as Kite's web or another app
would (no tag of ours), ``amend`` moves any field of an order's latest row,
``hide_trades`` keeps an order's trades out of the trade book for a while (Kite's trade
book lags its order book; the positions count them), and ``adjust_position`` makes a
position row say something else than the trades add up to.

    with FakeKite() as kite:
        settings.KITE_API_URL = kite.url
        ...
        assert len(kite.placements()) == 1
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")
KITE_VERSION = "3"
ERRORS: dict[str, tuple[int, str, str]] = {
    "token": (403, "TokenException", "Incorrect `api_key` or `access_token`."),
    "permission": (403, "PermissionException", "Insufficient permission for that call."),
    "input": (400, "InputException", "Invalid `price`."),
    "order": (400, "OrderException", "Order cannot be placed: the instrument is in the ban period."),
    "margin": (400, "MarginException", "Insufficient funds. Required margin is 95417.84 but available margin is 74251.80."),
    "general": (500, "GeneralException", "Something went wrong."),
    "429": (429, "NetworkException", "Too many requests"),
    "500": (500, "GeneralException", "Internal server error"),
    "502": (502, "DataException", "Bad response from the order management system"),
    "503": (503, "NetworkException", "The order management system is unavailable"),
}  # fmt: skip
KINDS = {*ERRORS, "html", "timeout", "drop"}
WORKING = ("OPEN", "TRIGGER PENDING", "AMO REQ RECEIVED")
TERMINAL = ("COMPLETE", "CANCELLED", "REJECTED")
_MARK = "@@decimal@@"


@dataclass(frozen=True)
class Call:
    """One request as the server received it (header names in lower case)."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]


@dataclass
class Failure:
    kind: str
    times: int = 1
    accept: bool = False
    method: str | None = None
    path: str | None = None  # a prefix
    message: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or path.startswith(self.path)
        )


class KiteError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def dumps(value: Any) -> bytes:
    """JSON with Decimals written as the numbers they are (Kite sends JSON numbers)."""

    def default(item: Any) -> str:
        if isinstance(item, Decimal):
            return f"{_MARK}{item}{_MARK}"
        raise TypeError(f"not JSON: {type(item).__name__}")

    text = json.dumps(value, default=default)
    return re.sub(f'"{_MARK}(.*?){_MARK}"', r"\1", text).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    do_POST = do_PUT = do_DELETE = do_GET


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeKite


@dataclass
class FakeKite:
    api_key: str = "kite-test-key"
    api_secret: str = "kite-test-secret"
    access_token: str = "kite-test-token-1"
    user_id: str = "XX0000"  # whose session ``POST /session/token`` hands out (``GET /user/profile``)
    user_name: str = "Kite Connect"
    prices: dict[str, Decimal] = field(default_factory=dict)  # "NSE:INFY" -> the MARKET fill price
    instrument_tokens: dict[str, int] = field(default_factory=dict)  # "NSE:INFY" -> instrument_token
    freeze: dict[str, int] = field(default_factory=dict)  # "NFO:NIFTY..." -> freeze quantity (autoslice)
    refuse_slices: set[int] = field(default_factory=set)  # slice numbers (0-based) refused for margin
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(IST))

    def __post_init__(self) -> None:
        self.tokens = {self.access_token}
        self._rolled_over: dict[str, str] = {}  # token -> the TokenException message it now gets
        self.calls: list[Call] = []
        self._history: dict[str, list[dict[str, Any]]] = {}
        self._trades: list[dict[str, Any]] = []
        self._hidden: set[str] = set()  # order ids whose trades the trade book does not show yet
        self._position_changes: dict[tuple[str, str], dict[str, Any]] = {}
        self._failures: list[Failure] = []
        self._request_tokens: set[str] = set()
        self._ids = itertools.count(1)
        self._trade_ids = itertools.count(10_000_001)
        self._lock = threading.RLock()
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- running ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeKite:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-kite", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # held requests end (unanswered)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeKite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what the test controls ------------------------------------------------------------------

    def fail_next(self, kind: str, *, times: int = 1, accept: bool = False, method: str | None = None,
                  path: str | None = None, message: str | None = None) -> None:  # fmt: skip
        """Make the next ``times`` calls matching ``method`` and ``path`` (a prefix) fail."""
        if kind not in KINDS:
            raise ValueError(f"unknown failure {kind!r}: one of {sorted(KINDS)}")
        with self._lock:
            self._failures.append(Failure(kind, times, accept, method, path, message))

    def release(self) -> None:
        """End the requests held by ``timeout`` failures (unanswered)."""
        self._release.set()

    def issue_request_token(self) -> str:
        """A request token, as Kite's login redirect hands one out (good for one session)."""
        token = secrets.token_hex(16)
        with self._lock:
            self._request_tokens.add(token)
        return token

    def revoke(self, access_token: str) -> None:
        """Expire ``access_token`` (Kite's morning rollover)."""
        with self._lock:
            self.tokens.discard(access_token)

    def rollover(self, message: str = "rollover") -> set[str]:
        """Kite's morning: every live token dies; each then gets ``403 TokenException`` with
        ``message``. Returns the tokens that died. A login (``POST /session/token``) after
        it hands out a new token that works."""
        with self._lock:
            dead, self.tokens = set(self.tokens), set()
            self._rolled_over.update(dict.fromkeys(dead, message))
            return dead

    def sessions_issued(self) -> list[Call]:
        """Every exchange of a request token (``POST /session/token``), refused or not."""
        return self.calls_to("POST", "/session/token")

    def fill(self, order_id: str, *, quantity: int | None = None, price: Decimal | str | None = None) -> str:
        """Fill ``quantity`` (default: all that is pending) of a working order at ``price``
        (default: its limit, else the market); returns the trade id."""
        with self._lock:
            return self._fill(
                order_id, quantity=quantity, price=Decimal(price) if price is not None else None
            )

    def set_status(self, order_id: str, status: str, message: str | None = None) -> None:
        """Move an order to ``status`` (e.g. REJECTED by Kite's risk checks after placement)."""
        with self._lock:
            self._snapshot(order_id, status=status, status_message=message)

    def place_direct(self, *, exchange: str, tradingsymbol: str, transaction_type: str, quantity: int,
                     product: str = "MIS", order_type: str = "MARKET", price: Decimal | str = "0",
                     tag: str | None = None) -> str:  # fmt: skip
        """An order placed at Kite outside the portal (Kite's web, another app): no tag of
        ours unless ``tag`` is given. MARKET orders fill at once, as ``place`` does."""
        params = {
            "variety": "regular", "exchange": exchange, "tradingsymbol": tradingsymbol,
            "transaction_type": transaction_type, "quantity": int(quantity), "product": product,
            "order_type": order_type, "price": Decimal(price), "trigger_price": Decimal(0), "validity": "DAY",
            "validity_ttl": 0, "market_protection": Decimal(-1), "tag": tag, "algo_id": None,
        }  # fmt: skip
        with self._lock:
            return self._new_order(params, tags=[tag] if tag else [])

    def amend(self, order_id: str, **changes: Any) -> None:
        """Move any field of an order's latest row (a new snapshot), e.g. ``filled_quantity``."""
        with self._lock:
            self._snapshot(order_id, **changes)

    def hide_trades(self, order_id: str, hidden: bool = True) -> None:
        """Keep ``order_id``'s trades out of the trade book (``hidden=False`` shows them again)."""
        with self._lock:
            (self._hidden.add if hidden else self._hidden.discard)(order_id)

    def adjust_position(self, key: str, product: str, **fields: Any) -> None:
        """Make the net position row of ``key`` (``exchange:symbol``) and ``product`` say
        ``fields`` (e.g. another ``average_price``) instead of what its trades add up to."""
        with self._lock:
            self._position_changes[(key, product)] = dict(fields)

    def order(self, order_id: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._history[order_id][-1])

    def orders(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(history[-1]) for history in self._history.values()]

    def trades(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(trade) for trade in self._trades]

    def calls_to(self, method: str, path: str = "") -> list[Call]:
        """The recorded calls with ``method`` whose path starts with ``path``."""
        with self._lock:
            return [c for c in self.calls if c.method == method and c.path.startswith(path)]

    def placements(self) -> list[Call]:
        """Every place-order request received (``POST /orders/{variety}``)."""
        return self.calls_to("POST", "/orders/")

    # --- serving -----------------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        method = handler.command
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.calls.append(Call(method, parts.path, query, form, headers))
            failure = self._take_failure(method, parts.path)
        if failure is not None and not failure.accept:
            self._fail(handler, failure)
            return
        try:
            with self._lock:
                status, payload = (
                    200,
                    {"status": "success", "data": self._route(method, parts.path, query, form, headers)},
                )
        except KiteError as exc:
            status, payload = exc.status, _error(exc.error_type, exc.message)
        if failure is not None:
            self._fail(handler, failure)
            return
        self._answer(handler, status, dumps(payload))

    def _take_failure(self, method: str, path: str) -> Failure | None:
        for failure in self._failures:
            if failure.matches(method, path):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _fail(self, handler: _Handler, failure: Failure) -> None:
        if failure.kind == "timeout":
            self._release.wait(timeout=60)  # the client gives up long before; never answered
            handler.close_connection = True
        elif failure.kind == "drop":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
        elif failure.kind == "html":
            self._answer(handler, 502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        else:
            status, error_type, message = ERRORS[failure.kind]
            self._answer(handler, status, dumps(_error(error_type, failure.message or message)))

    @staticmethod
    def _answer(handler: _Handler, status: int, body: bytes, content_type: str = "application/json") -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _route(self, method: str, path: str, query: dict[str, str], form: dict[str, str],
               headers: dict[str, str]) -> Any:  # fmt: skip
        if headers.get("x-kite-version") != KITE_VERSION:
            raise KiteError(400, "InputException", "Missing or invalid X-Kite-Version header (use 3).")
        if (method, path) == ("POST", "/session/token"):
            return self._session(form)
        self._authorise(headers.get("authorization", ""))
        if (method, path) == ("DELETE", "/session/token"):
            self.tokens.discard(query.get("access_token", ""))
            return True
        if (method, path) == ("GET", "/user/profile"):
            return self._profile()
        if (method, path) == ("GET", "/orders"):
            return [dict(history[-1]) for history in self._history.values()]
        if (method, path) == ("GET", "/trades"):
            return [dict(trade) for trade in self._trades if trade["order_id"] not in self._hidden]
        if (method, path) == ("GET", "/portfolio/positions"):
            return self._positions()
        if method == "GET" and (match := re.fullmatch(r"/orders/([^/]+)/trades", path)):
            self._known(match[1])
            return [
                dict(t) for t in self._trades if t["order_id"] == match[1] and match[1] not in self._hidden
            ]
        if method == "GET" and (match := re.fullmatch(r"/orders/([^/]+)", path)):
            return [dict(row) for row in self._known(match[1])]
        if method == "POST" and (match := re.fullmatch(r"/orders/([a-z]+)", path)):
            return self._place(match[1], form)
        if method == "PUT" and (match := re.fullmatch(r"/orders/([a-z]+)/([^/]+)", path)):
            return self._modify(match[2], form)
        if method == "DELETE" and (match := re.fullmatch(r"/orders/([a-z]+)/([^/]+)", path)):
            return self._cancel(match[2])
        raise KiteError(404, "GeneralException", "Route not found")

    def _authorise(self, header: str) -> None:
        scheme, _, credentials = header.partition(" ")
        api_key, _, token = credentials.partition(":")
        if scheme == "token" and api_key == self.api_key and token in self._rolled_over:
            raise KiteError(403, "TokenException", self._rolled_over[token])
        if scheme != "token" or api_key != self.api_key or token not in self.tokens:
            raise KiteError(403, "TokenException", "Incorrect `api_key` or `access_token`.")

    # --- the session --------------------------------------------------------------------------------

    def _session(self, form: dict[str, str]) -> dict[str, Any]:
        request_token = form.get("request_token", "")
        if form.get("api_key") != self.api_key or request_token not in self._request_tokens:
            raise KiteError(403, "TokenException", "Token is invalid or has expired.")
        expected = hashlib.sha256(f"{self.api_key}{request_token}{self.api_secret}".encode()).hexdigest()
        if not secrets.compare_digest(form.get("checksum", ""), expected):
            raise KiteError(403, "TokenException", "Invalid `checksum`.")
        self._request_tokens.discard(request_token)
        access_token = secrets.token_hex(16)
        self.tokens.add(access_token)
        return {
            **self._profile(), "api_key": self.api_key, "access_token": access_token,
            "public_token": secrets.token_hex(8), "enctoken": secrets.token_hex(8), "refresh_token": "", "silo": "",
            "login_time": self._now(),
        }  # fmt: skip

    def _profile(self) -> dict[str, Any]:
        return {
            "user_type": "individual", "email": "desk@example.com", "user_name": self.user_name,
            "user_shortname": self.user_name.split()[-1] if self.user_name else "", "broker": "ZERODHA",
            "exchanges": ["NSE", "NFO", "BSE", "CDS", "MCX"], "products": ["CNC", "NRML", "MIS"],
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"], "avatar_url": None, "user_id": self.user_id,
            "meta": {"demat_consent": "physical"},
        }  # fmt: skip

    # --- orders ----------------------------------------------------------------------------------------

    def _now(self) -> str:
        return self.clock().astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")

    def _known(self, order_id: str) -> list[dict[str, Any]]:
        if order_id not in self._history:
            raise KiteError(400, "InputException", "Couldn't find that `order_id`.")
        return self._history[order_id]

    def _next_id(self) -> str:
        return f"{self.clock():%y%m%d}{next(self._ids):09d}"

    def _snapshot(self, order_id: str, **changes: Any) -> dict[str, Any]:
        row = {**self._known(order_id)[-1], **changes, "exchange_update_timestamp": self._now()}
        self._history[order_id].append(row)
        return row

    def _place(self, variety: str, form: dict[str, str]) -> dict[str, Any]:
        params = self._checked(variety, form)
        if form.get("autoslice") != "true":
            return {"order_id": self._new_order(params, tags=[params["tag"]] if params["tag"] else [])}
        parent = self._next_id()
        size = self.freeze.get(f"{params['exchange']}:{params['tradingsymbol']}") or params["quantity"]
        quantities = [min(size, params["quantity"] - start) for start in range(0, params["quantity"], size)]
        children: list[dict[str, Any]] = []
        for number, quantity in enumerate(quantities):
            if number in self.refuse_slices:
                status, error_type, message = ERRORS["margin"]
                children.append(
                    {"error": {"code": status, "error_type": error_type, "message": message, "data": None}}
                )
                continue
            tags = [t for t in (params["tag"], "autoslice", f"autoslice:{parent}") if t]
            children.append({"order_id": self._new_order({**params, "quantity": quantity}, tags=tags)})
        return {"order_id": parent, "children": children}

    def _checked(self, variety: str, form: dict[str, str]) -> dict[str, Any]:
        def number(name: str) -> Decimal:
            try:
                return Decimal(form.get(name) or "0")
            except ArithmeticError:
                raise KiteError(400, "InputException", f"Invalid `{name}`.") from None

        if variety not in ("regular", "amo", "co", "iceberg", "auction"):
            raise KiteError(400, "InputException", "Invalid `variety`.")
        for name in ("exchange", "tradingsymbol", "transaction_type", "quantity", "product", "order_type"):
            if not form.get(name):
                raise KiteError(400, "InputException", f"Missing `{name}`.")
        if form["transaction_type"] not in ("BUY", "SELL"):
            raise KiteError(400, "InputException", "Invalid `transaction_type`.")
        if form["order_type"] not in ("MARKET", "LIMIT", "SL", "SL-M"):
            raise KiteError(400, "InputException", "Invalid `order_type`.")
        if not form["quantity"].isdigit() or int(form["quantity"]) < 1:
            raise KiteError(400, "InputException", "Invalid `quantity`.")
        price, trigger, protection = number("price"), number("trigger_price"), number("market_protection")
        kind = form["order_type"]
        if kind in ("LIMIT", "SL") and price <= 0:
            raise KiteError(400, "InputException", "Invalid `price`.")
        if kind in ("SL", "SL-M") and trigger <= 0:
            raise KiteError(400, "InputException", "Invalid `trigger_price`.")
        if kind in ("MARKET", "SL-M") and not (protection == -1 or 0 < protection <= 100):
            raise KiteError(400, "InputException", "Market orders without market protection are not allowed via API. "
                            "Please set market protection or use a limit order.")  # fmt: skip
        if len(form.get("tag", "")) > 20:
            raise KiteError(
                400, "InputException", "Tag length should be less than or equal to 20 characters."
            )
        return {
            "variety": variety, "exchange": form["exchange"], "tradingsymbol": form["tradingsymbol"],
            "transaction_type": form["transaction_type"], "quantity": int(form["quantity"]),
            "product": form["product"], "order_type": kind, "price": price, "trigger_price": trigger,
            "validity": form.get("validity") or "DAY", "validity_ttl": int(form.get("validity_ttl") or 0),
            "market_protection": protection, "tag": form.get("tag") or None, "algo_id": form.get("algo_id"),
        }  # fmt: skip

    def _new_order(self, params: dict[str, Any], *, tags: list[str]) -> str:
        order_id, now, key = self._next_id(), self._now(), f"{params['exchange']}:{params['tradingsymbol']}"
        row = {
            "placed_by": "XX0000", "order_id": order_id, "exchange_order_id": None, "parent_order_id": None,
            "status": "PUT ORDER REQ RECEIVED", "status_message": None, "status_message_raw": None,
            "order_timestamp": now, "exchange_update_timestamp": None, "exchange_timestamp": None,
            "variety": params["variety"], "modified": False, "exchange": params["exchange"],
            "tradingsymbol": params["tradingsymbol"], "instrument_token": self.instrument_tokens.get(key, 0),
            "order_type": params["order_type"], "transaction_type": params["transaction_type"],
            "validity": params["validity"], "validity_ttl": params["validity_ttl"], "product": params["product"],
            "quantity": params["quantity"], "disclosed_quantity": 0, "price": params["price"],
            "trigger_price": params["trigger_price"], "average_price": Decimal(0), "filled_quantity": 0,
            "pending_quantity": params["quantity"], "cancelled_quantity": 0,
            "market_protection": params["market_protection"], "meta": {}, "tag": params["tag"], "tags": tags,
            "guid": secrets.token_hex(6),
        }  # fmt: skip
        self._history[order_id] = [row]
        self._snapshot(order_id, status="VALIDATION PENDING")
        self._snapshot(order_id, status="OPEN PENDING")
        if params["variety"] == "amo":
            self._snapshot(order_id, status="AMO REQ RECEIVED")
            return order_id
        working = "TRIGGER PENDING" if params["order_type"] in ("SL", "SL-M") else "OPEN"
        self._snapshot(
            order_id, status=working, exchange_order_id=f"1{next(self._ids):015d}", exchange_timestamp=now
        )
        if params["order_type"] == "MARKET":
            self._fill(order_id)
        return order_id

    def _fill(self, order_id: str, *, quantity: int | None = None, price: Decimal | None = None) -> str:
        row = self._known(order_id)[-1]
        if row["status"] not in WORKING or row["status"] == "AMO REQ RECEIVED":
            raise ValueError(f"order {order_id} is {row['status']}: it cannot fill")
        quantity = quantity or row["pending_quantity"]
        if not 0 < quantity <= row["pending_quantity"]:
            raise ValueError(f"order {order_id} has {row['pending_quantity']} pending, not {quantity}")
        key = f"{row['exchange']}:{row['tradingsymbol']}"
        price = price or (
            row["price"] if row["order_type"] in ("LIMIT", "SL") else self.prices.get(key, Decimal(100))
        )
        trade_id, now = str(next(self._trade_ids)), self._now()
        self._trades.append({
            "trade_id": trade_id, "order_id": order_id, "exchange": row["exchange"],
            "tradingsymbol": row["tradingsymbol"], "instrument_token": row["instrument_token"],
            "product": row["product"], "average_price": price, "quantity": quantity,
            "exchange_order_id": row["exchange_order_id"], "transaction_type": row["transaction_type"],
            "fill_timestamp": now, "order_timestamp": now[11:], "exchange_timestamp": now,
        })  # fmt: skip
        filled = row["filled_quantity"] + quantity
        average = (row["average_price"] * row["filled_quantity"] + price * quantity) / filled
        pending = row["quantity"] - filled
        self._snapshot(order_id, filled_quantity=filled, pending_quantity=pending, average_price=average,
                       status="COMPLETE" if pending == 0 else row["status"])  # fmt: skip
        return trade_id

    def _modify(self, order_id: str, form: dict[str, str]) -> dict[str, Any]:
        row = self._known(order_id)[-1]
        if row["status"] not in WORKING:
            raise KiteError(
                400, "OrderException", f"Order cannot be modified as it is {row['status'].lower()}."
            )
        changes: dict[str, Any] = {"modified": True, "order_timestamp": self._now()}
        for name in ("price", "trigger_price"):
            if form.get(name):
                changes[name] = Decimal(form[name])
        if form.get("quantity"):
            if int(form["quantity"]) <= row["filled_quantity"]:
                raise KiteError(400, "InputException", "Quantity must be above the filled quantity.")
            changes["quantity"] = int(form["quantity"])
            changes["pending_quantity"] = changes["quantity"] - row["filled_quantity"]
        if form.get("order_type"):
            changes["order_type"] = form["order_type"]
        status = row["status"]
        self._snapshot(order_id, status="MODIFY VALIDATION PENDING")
        self._snapshot(order_id, status="MODIFY PENDING")
        self._snapshot(order_id, status=status, **changes)
        if changes.get("order_type") == "MARKET" and status == "OPEN":
            self._fill(order_id)
        return {"order_id": order_id}

    def _cancel(self, order_id: str) -> dict[str, Any]:
        row = self._known(order_id)[-1]
        if row["status"] in TERMINAL:
            raise KiteError(
                400, "OrderException", f"Order cannot be cancelled as it is {row['status'].lower()}."
            )
        self._snapshot(order_id, status="CANCEL PENDING")
        self._snapshot(
            order_id, status="CANCELLED", cancelled_quantity=row["pending_quantity"], pending_quantity=0
        )
        return {"order_id": order_id}

    def _positions(self) -> dict[str, list[dict[str, Any]]]:
        books: dict[tuple[str, str, str], dict[str, Any]] = {}
        for trade in self._trades:
            key = (trade["exchange"], trade["tradingsymbol"], trade["product"])
            book = books.setdefault(key, {"token": trade["instrument_token"], "buy": [0, Decimal(0)],
                                          "sell": [0, Decimal(0)], "last": trade["average_price"]})  # fmt: skip
            side = book["buy"] if trade["transaction_type"] == "BUY" else book["sell"]
            side[0] += trade["quantity"]
            side[1] += trade["average_price"] * trade["quantity"]
            book["last"] = trade["average_price"]
        rows = []
        for (exchange, symbol, product), book in books.items():
            (buy_q, buy_v), (sell_q, sell_v) = book["buy"], book["sell"]
            last = self.prices.get(f"{exchange}:{symbol}", book["last"])
            buy_p = buy_v / buy_q if buy_q else Decimal(0)
            sell_p = sell_v / sell_q if sell_q else Decimal(0)
            net = buy_q - sell_q
            average = buy_p if net > 0 else sell_p if net < 0 else Decimal(0)
            realised = min(buy_q, sell_q) * (sell_p - buy_p)
            unrealised = net * (last - average)
            rows.append({
                "tradingsymbol": symbol, "exchange": exchange, "instrument_token": book["token"], "product": product,
                "quantity": net, "overnight_quantity": 0, "multiplier": 1, "average_price": average,
                "close_price": Decimal(0), "last_price": last, "value": sell_v - buy_v, "pnl": realised + unrealised,
                "m2m": realised + unrealised, "unrealised": unrealised, "realised": realised,
                "buy_quantity": buy_q, "buy_price": buy_p, "buy_value": buy_v, "buy_m2m": buy_v,
                "sell_quantity": sell_q, "sell_price": sell_p, "sell_value": sell_v, "sell_m2m": sell_v,
                "day_buy_quantity": buy_q, "day_buy_price": buy_p, "day_buy_value": buy_v,
                "day_sell_quantity": sell_q, "day_sell_price": sell_p, "day_sell_value": sell_v,
            })  # fmt: skip
        for row in rows:
            row.update(
                self._position_changes.get((f"{row['exchange']}:{row['tradingsymbol']}", row["product"]), {})
            )
        return {"net": rows, "day": [dict(row) for row in rows]}


def _error(error_type: str, message: str) -> dict[str, Any]:
    return {"status": "error", "message": message, "data": None, "error_type": error_type}
