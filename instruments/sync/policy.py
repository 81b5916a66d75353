"""What a sync may fetch, and where Kite's credentials may go.

Credentials: the API key and access token go only to the origin (scheme, host, port) of
``KITE_INSTRUMENTS_URL`` or ``KITE_API_URL``, and only over https, or over plain http to
a loopback host (a local test server configured as one of those settings). Any other URL,
``http://api.kite.trade/...`` included, gets no credentials.

Syncs started from the web (the API, the admin's *Start a sync*) fetch only from the
configured dump hosts: the host and port of ``KITE_INSTRUMENTS_URL`` and
``UPSTOX_INSTRUMENTS_URL``, and the entries of ``SYNC_ALLOWED_HOSTS`` (``host`` for any
port, or ``host:port``), over http or https, with no credentials in the URL. Every
address such a host resolves to must be public (not loopback, private, link-local,
multicast or reserved), unless the entry says the operator meant a local server: it is in
``SYNC_ALLOWED_HOSTS``, or the configured URL names an IP address or ``localhost``. The
check runs when the sync is requested, again in the worker before each request (each
redirect is a new request, followed here, never by ``requests``), and on the address the
connection actually reached, so a name that resolves differently the second time (DNS
rebinding) gets nothing. ``manage.py sync_instruments --url`` (someone with a shell) is
not restricted.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
import urllib3
from django.conf import settings

from instruments.sync.errors import SourceUnreachable, UrlRefused
from tradingportal.security import redact, url_for_display

logger = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 80, "https": 443}
# Query parameter names that carry credentials (access_token, api_key, X-Amz-Signature...).
_SECRET_NAME = re.compile(r"token|secret|passw|pwd|key|sig|auth|credential|session|cookie", re.I)
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int


def url_origin(url: str) -> Origin | None:
    """The (scheme, host, port) of an http(s) URL, normalised; None if it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return Origin(scheme, host, port or DEFAULT_PORTS[scheme])


def _ip(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _names_local(host: str) -> bool:
    """``host`` as written names a local or private server: an IP literal that is not
    public, or ``localhost``."""
    address = _ip(host)
    return (
        host == "localhost" or host.endswith(".localhost") or (address is not None and not address.is_global)
    )


def _is_loopback(host: str) -> bool:
    address = _ip(host)
    return host == "localhost" or (address is not None and address.is_loopback)


# --- credentials ---------------------------------------------------------------------------


def kite_credentials_allowed(url: str) -> bool:
    """May Kite's API key and access token be sent to ``url``? See the module docstring."""
    target = url_origin(url)
    if target is None:
        return False
    for name in ("KITE_INSTRUMENTS_URL", "KITE_API_URL"):
        if url_origin(getattr(settings, name)) != target:
            continue
        if target.scheme == "https" or _is_loopback(target.host):
            return True
        logger.warning(
            "%s is plain http to %s: Kite credentials are sent only over https (or to a loopback host)",
            name,
            target.host,
        )
    return False


# --- what a web-started sync may fetch -------------------------------------------------------


@dataclass(frozen=True)
class AllowedHost:
    host: str
    port: int | None  # None: any port
    local_ok: bool  # may resolve to loopback/private addresses
    origin: str  # where the entry comes from, for messages

    def matches(self, target: Origin) -> bool:
        return self.host == target.host and self.port in (None, target.port)


def _parse_allowed_entry(entry: str) -> tuple[str, int | None] | None:
    text = entry.strip().lower()
    if not text:
        return None
    parts = urlsplit(text if "://" in text else f"//{text}")
    try:
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    return (host, port) if host else None


def allowed_hosts() -> list[AllowedHost]:
    """The hosts a web-started sync may fetch from."""
    found: list[AllowedHost] = []
    for name in ("KITE_INSTRUMENTS_URL", "UPSTOX_INSTRUMENTS_URL"):
        origin = url_origin(getattr(settings, name) or "")
        if origin is not None:
            found.append(AllowedHost(origin.host, origin.port, _names_local(origin.host), name))
    for entry in settings.SYNC_ALLOWED_HOSTS:
        parsed = _parse_allowed_entry(entry)
        if parsed is not None:
            found.append(AllowedHost(parsed[0], parsed[1], True, "SYNC_ALLOWED_HOSTS"))
    return found


def _describe_allowed(hosts: list[AllowedHost]) -> str:
    shown = sorted({f"{h.host}:{h.port}" if h.port else h.host for h in hosts})
    return ", ".join(shown) or "none"


def url_credentials_refusal(url: str) -> str | None:
    """Why ``url`` may not be queued because it carries credentials, or None."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.username or parts.password:
        return (
            "the URL carries credentials (user:password@); they would be stored with the task. "
            "Configure them instead (KITE_API_KEY and KITE_ACCESS_TOKEN for Kite) and give the URL without them"
        )
    names = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True) if _SECRET_NAME.search(name)]
    if names or redact(url) != url:
        shown = f" ({', '.join(sorted(set(names)))})" if names else ""
        return (
            f"the URL carries what looks like a credential{shown}; it would be stored with the task. "
            "Configure credentials in the settings (KITE_API_KEY and KITE_ACCESS_TOKEN for Kite) and give "
            "the URL without them"
        )
    return None


def _resolve(host: str, port: int) -> list[IpAddress]:
    address = _ip(host)
    if address is not None:
        return [address]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise SourceUnreachable(f"cannot resolve the host {host}: {exc}") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def _address_refusal(host: str, address: IpAddress) -> str | None:
    if address.is_global and not address.is_multicast:
        return None
    kind = (
        "loopback" if address.is_loopback else
        "link-local" if address.is_link_local else
        "private" if address.is_private else
        "multicast" if address.is_multicast else
        "reserved"
    )  # fmt: skip
    return (
        f"{host} resolves to a {kind} address ({address}); a sync started from the web fetches only "
        "from public addresses unless the host is listed in SYNC_ALLOWED_HOSTS"
    )


class FetchGuard:
    """Checks each request of a web-started sync: before it (``url``) and on the address it
    reached (``peer``, through ``session()``). Raises ``UrlRefused`` with a reason a person
    can act on."""

    def __init__(self) -> None:
        self._hosts = allowed_hosts()

    def _allowed(self, target: Origin) -> AllowedHost | None:
        matching = [h for h in self._hosts if h.matches(target)]
        if not matching:
            return None
        return next((h for h in matching if h.local_ok), matching[0])

    def url(self, url: str, *, unresolvable_ok: bool = False) -> None:
        """Refuse ``url`` unless a web-started sync may fetch it. ``unresolvable_ok``: a
        host name that does not resolve now passes (when queueing: the worker checks
        again before fetching, and reports it if it still does not)."""
        shown = url_for_display(url)
        target = url_origin(url)
        if target is None:
            raise UrlRefused(f"{shown}: only http and https URLs can be fetched")
        reason = url_credentials_refusal(url)
        if reason:
            raise UrlRefused(reason)
        allowed = self._allowed(target)
        if allowed is None:
            raise UrlRefused(
                f"{target.host}:{target.port} is not an allowed dump host (allowed: "
                f"{_describe_allowed(self._hosts)}). A sync started from the web fetches only from the "
                "hosts of KITE_INSTRUMENTS_URL and UPSTOX_INSTRUMENTS_URL and those listed in SYNC_ALLOWED_HOSTS"
            )
        if allowed.local_ok:
            return
        try:
            addresses = _resolve(target.host, target.port)
        except SourceUnreachable:
            if unresolvable_ok:
                return
            raise
        for address in addresses:
            refusal = _address_refusal(target.host, address)
            if refusal:
                raise UrlRefused(refusal)

    def peer(self, host: str, sock: socket.socket) -> None:
        """The address a connection to ``host`` reached must pass the same address check
        (called by ``session()``'s connections, before anything is sent)."""
        target = Origin("http", host.strip("[]").lower().rstrip("."), 0)
        allowed = next((h for h in self._hosts if h.host == target.host and h.local_ok), None)
        if allowed is not None:
            return
        peer = ipaddress.ip_address(str(sock.getpeername()[0]).split("%", 1)[0])
        refusal = _address_refusal(target.host, peer)
        if refusal:
            sock.close()
            raise UrlRefused(refusal)

    def session(self) -> requests.Session:
        """A requests session whose connections are checked by ``peer`` once connected (a
        name that resolves differently than when ``url`` checked it gets nothing). Through
        a proxy (HTTP(S)_PROXY) the proxy resolves names itself and is not checked."""
        session = requests.Session()
        adapter = _PeerCheckedAdapter(self.peer)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session


class _PeerCheckedAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, check: Callable[[str, socket.socket], None]) -> None:
        self._check = check
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        check = self._check

        class Checked(urllib3.connection.HTTPConnection):
            def connect(self) -> None:
                super().connect()
                if not (self.proxy or self._tunnel_host) and self.sock is not None:
                    check(self.host, self.sock)

        class CheckedTLS(urllib3.connection.HTTPSConnection):
            def connect(self) -> None:
                super().connect()
                if not (self.proxy or self._tunnel_host) and self.sock is not None:
                    check(self.host, self.sock)

        class Pool(urllib3.HTTPConnectionPool):
            ConnectionCls = Checked

        class TLSPool(urllib3.HTTPSConnectionPool):
            ConnectionCls = CheckedTLS

        self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": TLSPool}


def web_sync_url_check(url: str) -> None:
    """When a sync is requested from the web: refuse (``UrlRefused``) a URL it may not fetch."""
    FetchGuard().url(url, unresolvable_ok=True)
