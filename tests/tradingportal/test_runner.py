"""The runner's decisions and its handling of process groups, without the portal running
(the whole runner, as a user starts it, is in tests/e2e/test_runner.py)."""

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import timedelta

import psutil
import pytest
from django.core.cache import caches
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf
from django_q.signing import SignedPackage
from django_q.status import Stat, Status

from tests.helpers import BASE_DIR, wait_for
from tradingportal import runner
from tradingportal.worker import QUEUED_KEY, RAN_KEY


def names(children):
    return [child.name for child in children]


def test_embedded_defaults_run_web_and_worker_with_the_simulated_feed_in_the_web_process(settings, capsys):
    settings.REDIS_URL, settings.KITE_API_KEY, settings.KITE_ACCESS_TOKEN = "", "", ""
    settings.HOST, settings.PORT = "0.0.0.0", 8123  # noqa: S104
    children = runner.plan(env={"PATH": "/bin"})
    assert names(children) == ["web", "worker"]
    web, worker = children
    assert web.argv[1:4] == ["-m", "uvicorn", "tradingportal.asgi:application"]
    assert web.argv[web.argv.index("--host") + 1] == "0.0.0.0"  # noqa: S104
    assert web.argv[web.argv.index("--port") + 1] == "8123"
    assert web.env["INGESTION_IN_PROCESS"] == "1" and web.env["INGESTION_SIMULATE"] == "1"
    assert worker.argv[-1] == "qcluster" and worker.watch_liveness
    out = capsys.readouterr().out
    assert "feed: the built-in simulator" in out
    assert "ingestion runs inside the web process (no REDIS_URL)" in out
    assert "runs in inside" not in out


def test_kite_credentials_in_the_settings_choose_kite(settings, capsys):
    # Whatever put them there: the environment or ENV_FILE (the settings read both).
    settings.REDIS_URL = "redis://127.0.0.1:6379/9"
    settings.KITE_API_KEY, settings.KITE_ACCESS_TOKEN = "kite-key", "kite-token-secret"
    settings.KITE_TICKER_URL = "ws://127.0.0.1:8765?api_key=kite-key"
    children = runner.plan(env={})
    assert names(children) == ["web", "ingestion", "worker"]
    assert children[1].argv[-1] == "run_ingestion"  # no --simulate
    assert "INGESTION_IN_PROCESS" not in children[0].env
    out = capsys.readouterr().out
    assert "feed: Kite at ws://127.0.0.1:8765" in out and "in its own process (REDIS_URL set)" in out
    assert "kite-token-secret" not in out and "api_key" not in out


def test_a_token_file_counts_as_kite_credentials(settings, tmp_path):
    settings.REDIS_URL, settings.KITE_API_KEY, settings.KITE_ACCESS_TOKEN = "", "kite-key", ""
    settings.KITE_ACCESS_TOKEN_FILE = str(tmp_path / "token")
    web, _ = runner.plan(env={})
    assert web.env["INGESTION_SIMULATE"] == "0"


# --- the local .env -----------------------------------------------------------------------


@pytest.fixture
def env_file(tmp_path, monkeypatch):
    path = tmp_path / "portal.env"
    monkeypatch.setenv("ENV_FILE", str(path))
    monkeypatch.delenv("SECRET_KEY", raising=False)
    return path


def test_a_missing_env_file_is_written_with_a_secret_key_readable_by_its_owner_only(env_file):
    runner.ensure_local_env()
    text = env_file.read_text()
    assert "SECRET_KEY=" in text and len(text.split("SECRET_KEY=")[1].strip()) >= 50
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    runner.ensure_local_env()
    assert env_file.read_text() == text  # never rewritten


def test_an_env_file_without_a_secret_key_gets_one_added_and_keeps_the_rest(env_file):
    env_file.write_text("KITE_API_KEY=kite-key\nKITE_ACCESS_TOKEN=kite-token")
    runner.ensure_local_env()
    lines = env_file.read_text().splitlines()
    assert lines[:2] == ["KITE_API_KEY=kite-key", "KITE_ACCESS_TOKEN=kite-token"]
    assert lines[2].startswith("SECRET_KEY=")


def test_a_secret_key_in_the_environment_needs_no_file(env_file, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    runner.ensure_local_env()
    assert not env_file.exists()


def test_make_install_writes_the_env_file_so_manage_py_works_at_once(tmp_path):
    """A fresh clone: `make install`, then any README command (no SECRET_KEY, no DEBUG)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE")}
    env.update(ENV_FILE=str(tmp_path / "fresh.env"), DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    # -o: the pinned packages are installed already (the stamp's recipe would reinstall them).
    install = subprocess.run(["make", "-o", ".venv/.installed", "install"], cwd=BASE_DIR, env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    assert "SECRET_KEY=" in (tmp_path / "fresh.env").read_text()
    check = subprocess.run([sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert "System check identified no issues" in check.stdout


# --- process groups -----------------------------------------------------------------------


def spawn(tmp_path, code):
    child = runner.Child("probe", [sys.executable, "-c", textwrap.dedent(code)], dict(os.environ))
    child.start()
    return child


def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_each_child_runs_in_a_process_group_of_its_own(tmp_path):
    child = spawn(tmp_path, "import time; time.sleep(60)")
    try:
        assert os.getpgid(child.process.pid) == child.process.pid != os.getpgid(0)
    finally:
        child.kill_group()
    assert not child.group_alive()


def test_what_an_exited_child_leaves_behind_is_killed(tmp_path):
    orphan_pid = tmp_path / "orphan.pid"
    child = spawn(
        tmp_path,
        f"""
        import subprocess, sys
        orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        open({str(orphan_pid)!r}, "w").write(str(orphan.pid))
    """,
    )
    child.process.wait(timeout=30)
    pid = int(wait_for(lambda: orphan_pid.exists() and orphan_pid.read_text(), what="the orphan's pid"))
    assert alive(pid)  # what django-q2's sentinel and workers do when their parent is killed
    assert child.kill_group() is True
    assert not alive(pid) and not child.group_alive()


def test_stopping_signals_each_child_once_then_kills_what_is_left(tmp_path, monkeypatch):
    """SIGTERM reaches the child only (not its group: the child stops its own processes);
    after the grace, whatever is left of the group is killed."""
    monkeypatch.setattr(runner, "STOP_GRACE_SECONDS", 5)
    signals = tmp_path / "signals"
    (tmp_path / "helper.py").write_text(
        textwrap.dedent(f"""
        import signal, time
        signal.signal(signal.SIGTERM, lambda *a: open({str(signals)!r}, "a").write("helper got SIGTERM\\n"))
        open({str(signals)!r}, "a").write("helper ready\\n")
        time.sleep(300)
    """)
    )
    child = spawn(
        tmp_path,
        f"""
        import signal, subprocess, sys, time
        helper = subprocess.Popen([sys.executable, {str(tmp_path / "helper.py")!r}])
        def stop(*args):
            open({str(signals)!r}, "a").write("child got SIGTERM\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        time.sleep(300)
    """,
    )
    wait_for(lambda: signals.exists() and "helper ready" in signals.read_text(), what="the helper to start")
    runner.stop_all([child])
    assert child.process.returncode == 0
    assert signals.read_text().splitlines() == ["helper ready", "child got SIGTERM"]
    assert not child.group_alive()


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "STOP_GRACE_SECONDS", 1)
    ready = tmp_path / "ready"
    child = spawn(
        tmp_path,
        f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").write("1")
        time.sleep(300)
    """,
    )
    wait_for(ready.exists, what="the child to ignore SIGTERM")
    runner.stop_all([child])
    assert child.process.returncode == -signal.SIGKILL
    assert "probe did not stop in 1s; killing its processes" in capsys.readouterr().out


# --- when the worker gets restarted -----------------------------------------------------


@pytest.fixture
def worker_state(settings, tmp_path):
    if settings.WORKER_CACHE != "default":
        settings.CACHES = {**settings.CACHES, settings.WORKER_CACHE: {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp_path / "w")}}  # fmt: skip
    cache = caches[settings.WORKER_CACHE]
    cache.clear()
    stock = Redis() if Conf.DJANGO_REDIS else ORM()
    saved = []

    def report(*, pid, busy=False, queued_ago, ran_ago):
        status = Status(pid=pid, cluster_id=uuid.uuid4())
        status.workers, status.host, status.status = [777], socket.gethostname(), "Idle"
        status.tob = timezone.now() - timedelta(seconds=600)
        stock.set_stat(Stat.get_key(status.cluster_id), SignedPackage.dumps(status, True), 60)
        saved.append(Stat.get_key(status.cluster_id))
        cache.set(QUEUED_KEY, {"at": time.time() - queued_ago}, timeout=None)
        cache.set(RAN_KEY, {"at": time.time() - ran_ago}, timeout=None)
        if busy:
            cache.set(f"worker:busy:{socket.gethostname()}:777", {"since": time.time(), "task": "sync"})

    yield report
    for key in saved:
        if isinstance(stock, Redis):
            stock.connection.delete(key)
    caches[Conf.CACHE].delete(Conf.Q_STAT)


@pytest.fixture
def worker_child():
    child = runner.Child("worker", [sys.executable, "-c", "import time; time.sleep(120)"], dict(os.environ))
    child.start()
    yield child
    child.kill_group()


@pytest.mark.django_db
def test_a_stuck_worker_is_restarted_a_busy_one_is_not(settings, worker_state, worker_child):
    stale = settings.WORKER_STALE_SECONDS
    watch = runner.WorkerWatch()
    worker_state(pid=worker_child.process.pid, busy=True, queued_ago=stale + 5, ran_ago=stale + 9)
    assert watch.why_restart(worker_child, time.monotonic()) is None
    caches[settings.WORKER_CACHE].delete(f"worker:busy:{socket.gethostname()}:777")
    watch.next_check = 0
    reason = watch.why_restart(worker_child, time.monotonic())
    assert reason and "no worker is busy" in reason


@pytest.mark.django_db
def test_another_clusters_trouble_does_not_restart_ours(settings, worker_state, worker_child):
    worker_state(
        pid=worker_child.process.pid + 100000, queued_ago=settings.WORKER_STALE_SECONDS + 5, ran_ago=60
    )
    assert runner.WorkerWatch().why_restart(worker_child, time.monotonic()) is None


@pytest.mark.django_db
def test_a_worker_reporting_no_status_is_left_alone(settings, worker_child):
    # Starting, or blocked on the database or Redis: a restart would not help.
    assert runner.WorkerWatch().why_restart(worker_child, worker_child.started_at + 3600) is None
