"""One-command mode: ``python -m tradingportal.runner`` (what ``make run`` starts).

Reads its configuration exactly as the portal's settings do (the environment, then
``ENV_FILE``, by default ``.env`` beside ``manage.py``; real environment variables win) and
asks the settings what to run, so the feed, Redis, host and port it picks are the ones every
``manage.py`` command in this checkout sees. It prepares the database (migrate, the local
admin login, static files), then runs the portal's processes in one supervised tree:

- web: uvicorn serving the ASGI app (admin, API, dashboard, ``/ws/ticks/``);
- worker: the django-q2 cluster (schedules and queued tasks);
- ingestion: ``run_ingestion`` as its own process when ``REDIS_URL`` is set (channels-redis
  reaches every web worker); on the embedded defaults the in-memory channel layer reaches
  one process only, so the web process runs the feed itself.

The feed is Kite's when ``ingestion.credentials.kite_feed_configured()`` says so (an API
key, and a token, a token file or ``KITE_API_SECRET`` for logging in from the portal), else
the built-in simulator; the runner prints which.

Each child runs in its own session and process group, so a signal meant for the runner
(Ctrl-C, ``kill -TERM -- -PGID`` from a supervisor) reaches the runner alone, and the
runner stops each child once, cleanly: SIGTERM to the child, then, after
``STOP_GRACE_SECONDS``, SIGKILL to whatever is left of its group. A child that exits has
the rest of its group killed (no orphaned django-q2 processes) and is restarted with
backoff; one that exits ``MAX_RESTARTS + 1`` times in ``RESTART_WINDOW_SECONDS`` stops the
portal (exit 1). The worker is also restarted when it stops running tasks
(``tradingportal.worker.worker_liveness()`` says it is stuck). Ctrl-C, SIGTERM or SIGHUP:
every child stopped, exit 0. Children get SIGTERM if the runner itself dies.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
STOP_GRACE_SECONDS = 15
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 120
LIVENESS_EVERY_SECONDS = 2.0
_PR_SET_PDEATHSIG = 1


def say(message: str) -> None:
    print(f"[portal] {message}", flush=True)  # noqa: T201 - the runner talks to a terminal


def _libc_prctl() -> object | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_prctl = _libc_prctl()


def _stop_with_runner() -> None:
    """In the child, before exec: SIGTERM when the runner dies, however it dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)  # type: ignore[operator]


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    watch_liveness: bool = False  # the worker: restarted when it stops running tasks
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    next_start: float = 0.0
    started_at: float = 0.0
    # The group was seen empty after its leader ended: its id may now belong to someone
    # else's new process group, so it is never signalled again.
    group_gone: bool = False

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603
            self.argv, cwd=BASE_DIR, env=self.env, start_new_session=True, preexec_fn=_stop_with_runner
        )
        self.started_at = time.monotonic()
        self.group_gone = False
        say(f"started {self.name} (pid {self.process.pid}, its own process group)")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def group_alive(self) -> bool:
        if self.process is None or self.group_gone:
            return False
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def kill_group(self) -> bool:
        """SIGKILL every process left in the child's group and wait until it is empty;
        returns whether anything was left."""
        if self.process is None or self.group_gone:
            return False
        left = True
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            left = False
        self.process.wait()
        deadline = time.monotonic() + 10
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)  # orphans are reaped by init, not by us
        self.group_gone = not self.group_alive()
        return left


def manage(*args: str) -> list[str]:
    return [sys.executable, str(BASE_DIR / "manage.py"), *args]


def env_file() -> Path:
    """The file of local settings, as ``tradingportal.settings`` finds it."""
    return Path(os.environ.get("ENV_FILE") or BASE_DIR / ".env")


def ensure_local_env() -> None:
    """Give this checkout its own SECRET_KEY in ``.env`` (mode 600) so that ``manage.py``
    commands run here work in any order (``make install`` and ``make run`` call this).
    Never overwrites: an existing file without a SECRET_KEY gets one appended."""
    if os.environ.get("SECRET_KEY"):
        return
    import secrets

    path = env_file()
    line = f"SECRET_KEY={secrets.token_urlsafe(50)}\n"
    if path.exists():
        text = path.read_text()
        if re.search(r"^\s*(export\s+)?SECRET_KEY\s*=\s*\S", text, re.M):
            return
        with path.open("a") as handle:
            handle.write(("" if text.endswith("\n") or not text else "\n") + line)
        say(f"added a generated SECRET_KEY to {path}")
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            "# Written for this checkout by `make install`/`make run`; real environment variables win.\n"
        )
        handle.write(line)
    say(f"wrote {path} with a generated SECRET_KEY for this checkout")


def metrics_dir_fresh() -> str:
    """The Prometheus multiprocess directory for this run (``PROMETHEUS_MULTIPROC_DIR``, by
    default ``var/prometheus``), emptied of the last run's files: a counter starts at 0."""
    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or BASE_DIR / "var" / "prometheus")
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # only prometheus-client's files, whatever else is there
        stale.unlink(missing_ok=True)
    return str(path)


def configure() -> dict[str, str]:
    """Load the settings the way every portal process does; returns the children's
    environment (the runner's own, plus its development defaults)."""
    import environ

    original = dict(os.environ)
    path = env_file()
    if path.is_file():
        environ.Env.read_env(str(path), overwrite=False)  # as settings.py does: the environment wins
    extra = {
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "tradingportal.settings"),
        "PYTHONUNBUFFERED": "1",
    }
    if "DEBUG" not in os.environ:
        extra["DEBUG"] = "1"  # development mode (plain HTTP on loopback) unless set anywhere
    extra["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir_fresh()  # /metrics sums every child's figures
    os.environ.update(extra)
    import django

    django.setup()
    # Children read ENV_FILE themselves, so an edited .env applies when one restarts.
    return {**original, **extra}


def prepare(env: dict[str, str]) -> None:
    for step in (("migrate", "--noinput"), ("ensure_admin",), ("collectstatic", "--noinput", "-v", "0")):
        result = subprocess.run(manage(*step), cwd=BASE_DIR, env=env, check=False)  # noqa: S603
        if result.returncode != 0:
            say(f"`manage.py {' '.join(step)}` failed (exit {result.returncode}); not starting.")
            raise SystemExit(result.returncode)


def plan(*, env: dict[str, str]) -> list[Child]:
    """The children to run, decided by the settings (so by the environment and ENV_FILE)."""
    from django.conf import settings

    from ingestion.credentials import kite_feed_configured
    from tradingportal.security import url_for_display

    live_feed = kite_feed_configured()
    has_redis = bool(settings.REDIS_URL)
    web_env = dict(env)
    feed_process: list[Child] = []
    if has_redis:
        feed_args = [] if live_feed else ["--simulate"]
        feed_process.append(Child("ingestion", manage("run_ingestion", *feed_args), dict(env)))
    else:
        web_env["INGESTION_IN_PROCESS"] = "1"
        web_env["INGESTION_SIMULATE"] = "0" if live_feed else "1"
    feed = (
        f"Kite at {url_for_display(settings.KITE_TICKER_URL)}"
        if live_feed
        else "the built-in simulator (no KITE_API_KEY with an access token, a token file or KITE_API_SECRET)"
    )
    where = "in its own process (REDIS_URL set)" if has_redis else "inside the web process (no REDIS_URL)"
    say(f"feed: {feed}; ingestion runs {where}")
    web = [sys.executable, "-m", "uvicorn", "tradingportal.asgi:application", "--host", settings.HOST,
           "--port", str(settings.PORT), "--lifespan", "on", "--no-server-header"]  # fmt: skip
    worker = Child("worker", manage("qcluster"), dict(env), watch_liveness=True)
    return [Child("web", web, web_env), *feed_process, worker]


class WorkerWatch:
    """Asks ``worker_liveness()`` whether the worker child still runs tasks."""

    def __init__(self) -> None:
        import logging

        from tradingportal.logging import RepeatedFailure

        self.failure = RepeatedFailure(logging.getLogger(__name__), "reading the worker's liveness")
        self.next_check = 0.0

    def why_restart(self, child: Child, now: float) -> str | None:
        """A reason to restart ``child`` (the running worker), or None."""
        if now < self.next_check or child.process is None:
            return None
        self.next_check = now + LIVENESS_EVERY_SECONDS
        from tradingportal.worker import worker_liveness

        try:
            liveness = worker_liveness()
        except Exception as exc:  # noqa: BLE001 - Redis or the cache away: nothing to decide on
            self.failure.failed(exc)
            return None
        self.failure.succeeded()
        # Only a cluster that reports its status and idle workers while tasks wait is stuck. One
        # that reports nothing is starting, gone (the runner sees its process exit) or blocked on
        # the database or Redis (a restart would not help, and would kill its running task).
        host = socket.gethostname()
        ours = [c for c in liveness["clusters"] if c["pid"] == child.process.pid and c["host"] == host]
        if liveness["state"] == "stuck" and ours and not ours[0]["busy"]:
            return f"a heartbeat task has waited {liveness['heartbeat_waiting']:.0f}s and no worker is busy"
        return None


def _exited(child: Child, now: float, what: str) -> bool:
    """Book a restart of ``child``; False when it has failed too often (stop the portal)."""
    child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_SECONDS]
    child.restarts.append(now)
    if len(child.restarts) > MAX_RESTARTS:
        say(f"{child.name} failed {MAX_RESTARTS + 1} times in {RESTART_WINDOW_SECONDS}s; stopping the portal")
        return False
    delay = min(30.0, 2.0 ** len(child.restarts))
    say(f"{child.name} {what}; restarting in {delay:.0f}s")
    child.next_start = now + delay
    return True


def stop_all(children: list[Child]) -> None:
    """SIGTERM to each child (not its group: the child stops its own processes, once),
    then SIGKILL to whatever is left of each group."""
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
            say(f"{child.name} did not stop in {STOP_GRACE_SECONDS}s; killing its processes")
        if child.kill_group():
            say(f"killed what was left of {child.name}'s processes")


def supervise(children: list[Child], *, watch: WorkerWatch | None = None) -> int:
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    for child in children:
        child.start()
    exit_code = 0
    while not stopping:
        time.sleep(0.5)
        now = time.monotonic()
        for child in children:
            if stopping:
                break
            if child.running():
                reason = watch.why_restart(child, now) if watch and child.watch_liveness else None
                if reason is None:
                    continue
                say(f"{child.name} stopped running tasks ({reason}); killing its processes")
                child.kill_group()
                if not _exited(child, now, "was killed"):
                    stopping, exit_code = True, 1
            elif child.process is not None and child.next_start == 0.0:
                code = child.process.returncode
                if child.kill_group():
                    say(f"killed the processes {child.name} left behind")
                if not _exited(child, now, f"exited with code {code}"):
                    stopping, exit_code = True, 1
            elif child.next_start and now >= child.next_start:
                child.next_start = 0.0
                child.start()
    say("stopping...")
    stop_all(children)
    say("stopped")
    return exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tradingportal.runner", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--write-env",
        action="store_true",
        help="Only write this checkout's .env (SECRET_KEY) if missing, then exit.",
    )
    args = parser.parse_args(argv)
    ensure_local_env()
    if args.write_env:
        return 0
    env = configure()
    from django.conf import settings

    prepare(env)
    children = plan(env=env)
    shown_host = "127.0.0.1" if settings.HOST in ("0.0.0.0", "127.0.0.1", "::") else settings.HOST  # noqa: S104
    say(f"open http://{shown_host}:{settings.PORT}/  (admin: /admin/, API: /api/, health: /healthz)")
    return supervise(children, watch=WorkerWatch())


if __name__ == "__main__":
    sys.exit(main())
