"""One-command mode: ``python -m tradingportal.runner`` (what ``make run`` starts).

Prepares the database (migrate, the local admin login, static files), then runs the
portal's processes in one supervised foreground tree:

- web: uvicorn serving the ASGI app (admin, API, dashboard, ``/ws/ticks/``);
- worker: the django-q2 cluster (schedules);
- ingestion: ``run_ingestion`` as its own process when ``REDIS_URL`` is set (channels-redis
  reaches every web worker); on the embedded defaults the in-memory channel layer
  reaches one process only, so the web process runs the feed itself.

The feed is Kite's when ``KITE_API_KEY`` and ``KITE_ACCESS_TOKEN`` are set, else the
built-in simulator. A child that dies is restarted with backoff; one that keeps dying
stops the portal (exit 1). Ctrl-C or SIGTERM stops every child cleanly (exit 0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
STOP_GRACE_SECONDS = 15
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 120


def say(message: str) -> None:
    print(f"[portal] {message}", flush=True)  # noqa: T201 - the runner talks to a terminal


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    next_start: float = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, cwd=BASE_DIR, env=self.env)  # noqa: S603
        say(f"started {self.name} (pid {self.process.pid})")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def manage(*args: str) -> list[str]:
    return [sys.executable, str(BASE_DIR / "manage.py"), *args]


def prepare(env: dict[str, str]) -> None:
    for step in (("migrate", "--noinput"), ("ensure_admin",), ("collectstatic", "--noinput", "-v", "0")):
        result = subprocess.run(manage(*step), cwd=BASE_DIR, env=env, check=False)  # noqa: S603
        if result.returncode != 0:
            say(f"`manage.py {' '.join(step)}` failed (exit {result.returncode}); not starting.")
            raise SystemExit(result.returncode)


def plan(env: dict[str, str]) -> list[Child]:
    host = env.get("HOST", "127.0.0.1")
    port = env.get("PORT", "8000")
    has_redis = bool(env.get("REDIS_URL"))
    live_feed = bool(
        env.get("KITE_API_KEY") and (env.get("KITE_ACCESS_TOKEN") or env.get("KITE_ACCESS_TOKEN_FILE"))
    )
    web_env = dict(env)
    feed_process: list[Child] = []
    if has_redis:
        feed_args = [] if live_feed else ["--simulate"]
        feed_process.append(Child("ingestion", manage("run_ingestion", *feed_args), dict(env)))
    else:
        web_env["INGESTION_IN_PROCESS"] = "1"
        web_env["INGESTION_SIMULATE"] = "0" if live_feed else "1"
    feed = (
        f"Kite at {env.get('KITE_TICKER_URL', 'wss://ws.kite.trade')}"
        if live_feed
        else "the built-in simulator"
    )
    where = "its own process (REDIS_URL set)" if has_redis else "inside the web process (no REDIS_URL)"
    say(f"feed: {feed}; ingestion runs in {where}")
    web = [sys.executable, "-m", "uvicorn", "tradingportal.asgi:application", "--host", host, "--port", port,
           "--lifespan", "on", "--no-server-header"]  # fmt: skip
    return [Child("web", web, web_env), *feed_process, Child("worker", manage("qcluster"), dict(env))]


def stop_all(children: list[Child]) -> None:
    for child in children:
        if child.running():
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{child.name} did not stop in {STOP_GRACE_SECONDS}s; killing it")
            child.process.kill()
            child.process.wait()


def supervise(children: list[Child]) -> int:
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for child in children:
        child.start()
    exit_code = 0
    while not stopping:
        time.sleep(0.5)
        now = time.monotonic()
        for child in children:
            if child.running() or stopping:
                continue
            if child.process is not None and child.next_start == 0.0:
                code = child.process.returncode
                child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_SECONDS]
                child.restarts.append(now)
                if len(child.restarts) > MAX_RESTARTS:
                    say(
                        f"{child.name} exited {MAX_RESTARTS + 1} times in {RESTART_WINDOW_SECONDS}s; stopping the portal"
                    )
                    stopping, exit_code = True, 1
                    break
                delay = min(30.0, 2.0 ** len(child.restarts))
                say(f"{child.name} exited with code {code}; restarting in {delay:.0f}s")
                child.next_start = now + delay
            elif child.next_start and now >= child.next_start:
                child.next_start = 0.0
                child.start()
    say("stopping...")
    stop_all(children)
    say("stopped")
    return exit_code


def ensure_local_env() -> None:
    """Give this checkout its own SECRET_KEY in ``.env`` (mode 600) so that ``manage.py``
    commands run here outside ``make run`` work too. Never overwrites a ``.env``."""
    path = Path(os.environ.get("ENV_FILE") or BASE_DIR / ".env")
    if path.exists() or os.environ.get("SECRET_KEY"):
        return
    import secrets

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("# Written by `make run` for this checkout; real environment variables win.\n")
        handle.write(f"SECRET_KEY={secrets.token_urlsafe(50)}\n")
    say(f"wrote {path.name} with a generated SECRET_KEY for this checkout")


def main() -> int:
    ensure_local_env()
    env = dict(os.environ)
    env.setdefault("DEBUG", "1")  # development mode: plain HTTP on loopback works
    env.setdefault("DJANGO_SETTINGS_MODULE", "tradingportal.settings")
    env.setdefault("PYTHONUNBUFFERED", "1")
    prepare(env)
    children = plan(env)
    shown_host = "127.0.0.1" if env.get("HOST", "127.0.0.1") in ("0.0.0.0", "127.0.0.1") else env["HOST"]  # noqa: S104
    say(
        f"open http://{shown_host}:{env.get('PORT', '8000')}/  (admin: /admin/, API: /api/, health: /healthz)"
    )
    return supervise(children)


if __name__ == "__main__":
    sys.exit(main())
