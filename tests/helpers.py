"""Helpers shared by tests: free ports, child processes that always stop, waiting."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent


# Headless Chromium as the browser tests start it (no sandbox: CI runs as root).
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
]  # fmt: skip


def chromium_path() -> str | None:
    """Chromium for browser tests: ``CHROMIUM_PATH``, else Debian's ``chromium`` on PATH."""
    import shutil

    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def serving(routes: dict[str, bytes | tuple[int, bytes]]) -> Iterator[str]:
    """A real HTTP server on a free loopback port answering GET ``routes`` (path: body, or
    (status, body)); anything else is a 404. Yields its base URL; always stops."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            route = routes.get(self.path.split("?")[0], (404, b"not found"))
            status, body = route if isinstance(route, tuple) else (200, route)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port for a server a test is about to start. The kernel picks it at
    random, so two pytest-xdist workers asking at the same moment could get the same one:
    each worker only takes its share (``port // 2`` modulo the worker count: the kernel
    hands out odd ports first), and never a port this process handed out before."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    share = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % count
    for _ in range(10_000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port // 2 % count == share and port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port found")


def wait_for(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: {last_exc!r}")


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> None:
    """In a running event loop: wait until ``predicate()`` is true, or fail saying ``what``."""
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def child_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def run_python(code: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=timeout
    )


def manage(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a real process (own process group, output to ``log_path``); always stop it."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def test_database_url() -> str:
    """The database the running tests use, as a DATABASE_URL for child processes."""
    from django.db import connection

    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    from urllib.parse import quote

    auth = quote(settings["USER"] or "")
    if settings.get("PASSWORD"):
        auth += ":" + quote(settings["PASSWORD"])
    return (
        f"postgres://{auth}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/{settings['NAME']}"
    )


def portal_env(*, redis: bool, **extra: str) -> dict[str, str]:
    """Environment for real portal processes on the test database (production-like settings)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DEBUG", "INGESTION_IN_PROCESS")}
    env.update(
        DJANGO_SETTINGS_MODULE="tradingportal.settings",
        SECRET_KEY="e2e-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz-0123456789",
        HTTPS="0",
        DATABASE_URL=test_database_url(),
        PYTHONUNBUFFERED="1",
        LOG_FORMAT="text",
        CACHE_KEY_PREFIX=f"e2e{os.getpid()}",
        CHANNEL_LAYER_PREFIX=f"e2e{os.getpid()}",
        INGESTION_PUBLISH_INTERVAL="0.1",
        INGESTION_POLL_SECONDS="0.5",
    )
    if redis and os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    env.update(extra)
    return env


def uvicorn_argv(port: int, *, workers: int = 1) -> list[str]:
    argv = [sys.executable, "-m", "uvicorn", "tradingportal.asgi:application", "--host", "127.0.0.1",
            "--port", str(port), "--lifespan", "on", "--no-access-log"]  # fmt: skip
    if workers > 1:
        argv += ["--workers", str(workers)]
    return argv


def login_cookie(port: int, username: str, password: str) -> str:
    """Log in through the login page as a browser does; returns the Cookie header."""
    import http.cookiejar
    import re
    import urllib.parse
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login = f"http://127.0.0.1:{port}/accounts/login/"
    page = opener.open(login, timeout=10).read().decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert csrf, "no CSRF token on the login page"
    data = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": csrf.group(1), "next": "/"}
    ).encode()
    response = opener.open(urllib.request.Request(login, data=data, headers={"Referer": login}), timeout=10)
    assert not response.geturl().endswith("/accounts/login/"), "login failed"
    return "; ".join(f"{c.name}={c.value}" for c in jar)
