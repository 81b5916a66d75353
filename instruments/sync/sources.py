"""Opening a dump: a file or a URL, gzip detected from the bytes, read as a stream.

Nothing here holds the whole dump: the caller gets a binary stream and a byte counter
for progress.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import urljoin

import requests
import urllib3

from instruments.sync.errors import BadInput, SourceUnreachable
from tradingportal.security import url_for_display

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
CONNECT_TIMEOUT = 15
READ_TIMEOUT = 120
MAX_REDIRECTS = 5


@dataclass
class Progress:
    """Bytes read from the source so far, and the total when known."""

    read: int = 0
    total: int | None = None


class _CountingReader(io.RawIOBase):
    def __init__(self, raw: IO[bytes], progress: Progress) -> None:
        self._raw = raw
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._progress.read += n
        return n


class _GzipErrors(io.RawIOBase):
    """Turns a broken or truncated gzip stream into ``BadInput``."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        try:
            data = self._raw.read(len(buffer))
        except EOFError as exc:
            raise BadInput("the gzip stream is truncated (the download or file is incomplete)") from exc
        except (gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise BadInput(f"the gzip stream is corrupt: {exc}") from exc
        n = len(data)
        buffer[:n] = data
        return n


def describe_input(*, path: str | None = None, url: str | None = None) -> str:
    """What to record about the input: a path, or the URL without credentials or query secrets."""
    if path:
        return str(path)
    assert url is not None
    return url_for_display(url)


def _maybe_gunzip(stream: IO[bytes]) -> IO[bytes]:
    buffered = io.BufferedReader(stream, buffer_size=1 << 16)  # type: ignore[arg-type,type-var]
    if buffered.peek(2)[:2] == GZIP_MAGIC:
        return io.BufferedReader(_GzipErrors(gzip.GzipFile(fileobj=buffered)), buffer_size=1 << 16)  # type: ignore[arg-type]
    return buffered


HeadersFor = Callable[[str], dict[str, str]]


class Guard(Protocol):
    """Checks a request before it is sent (``url``) and, through the connections of its
    ``session()``, the address it reached (see ``policy.FetchGuard``)."""

    def url(self, url: str) -> None: ...

    def session(self) -> requests.Session: ...


@contextmanager
def open_dump(
    *,
    path: str | None = None,
    url: str | None = None,
    headers_for: HeadersFor | None = None,
    guard: Guard | None = None,
    progress: Progress | None = None,
) -> Iterator[IO[bytes]]:
    """Yield the dump's decompressed bytes as a stream, from ``path`` or ``url``.

    ``headers_for(url)`` gives each request's headers (credentials only where they may
    go); ``guard`` checks each request of a restricted (web-started) sync. Redirects are
    followed here, at most ``MAX_REDIRECTS``, each one a new request through both.
    """
    progress = progress or Progress()
    if path:
        file_path = Path(path)
        try:
            raw: IO[bytes] = open(file_path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise SourceUnreachable(f"cannot read {path}: {exc.strerror or exc}") from exc
        progress.total = file_path.stat().st_size
        try:
            yield _maybe_gunzip(_CountingReader(raw, progress))  # type: ignore[arg-type]
        finally:
            raw.close()
        return
    if not url:
        raise SourceUnreachable("no input: give --file PATH or --url URL")
    session = guard.session() if guard is not None else requests.Session()
    try:
        response, final_url = _get(session, url, headers_for=headers_for, guard=guard)
    except BaseException:
        session.close()
        raise
    shown = describe_input(url=final_url)
    try:
        length = response.headers.get("Content-Length")
        progress.total = int(length) if length and length.isascii() and length.isdigit() else None
        # Undo only the transport's Content-Encoding; a .gz body is detected by its bytes.
        response.raw.decode_content = True
        yield _maybe_gunzip(_CountingReader(response.raw, progress))  # type: ignore[arg-type]
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise SourceUnreachable(f"the download from {shown} broke off: {type(exc).__name__}") from exc
    finally:
        response.close()
        session.close()


def _get(
    session: requests.Session, url: str, *, headers_for: HeadersFor | None, guard: Guard | None
) -> tuple[requests.Response, str]:
    """GET ``url`` (following redirects ourselves); the 200 response and its URL."""
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        if guard is not None:
            guard.url(current)
        shown = describe_input(url=current)
        try:
            response = session.get(
                current,
                stream=True,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                headers=headers_for(current) if headers_for else {},
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise SourceUnreachable(f"cannot reach {shown}: {type(exc).__name__}") from exc
        try:
            location = response.headers.get("Location")
            if response.is_redirect and location:
                current = urljoin(current, location)
                response.close()
                continue
            if response.status_code != 200:
                raise SourceUnreachable(
                    f"{shown} answered HTTP {response.status_code}", detail=f" {response.reason}"
                )
        except BaseException:
            response.close()
            raise
        return response, current
    raise SourceUnreachable(f"{describe_input(url=url)}: more than {MAX_REDIRECTS} redirects")
