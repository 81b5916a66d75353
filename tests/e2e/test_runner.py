"""One-command mode as a user runs it: the real runner, its real processes, real signals."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import requires_redis
from tests.factories import InstrumentFactory
from tests.helpers import BASE_DIR, free_port, portal_env, running, serving, wait_for

pytestmark = pytest.mark.e2e
TOKEN = "e2e-healthz-token-0123456789abcdef"


@dataclass
class Portal:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, predicate, *, timeout: float, what: str):
        """``wait_for``, with the end of the runner's output when it times out."""
        try:
            return wait_for(predicate, timeout=timeout, interval=0.5, what=what)
        except AssertionError as exc:
            lines = [line for line in self.output().splitlines() if "GET /healthz" not in line]
            raise AssertionError(f"{exc}\n--- runner output ---\n" + "\n".join(lines[-80:])) from None

    def health(self) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/healthz",
                                         headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:  # 503: still a report
            return json.load(exc)

    def children(self) -> dict[str, psutil.Process]:
        """The runner's children by what they run."""
        found = {}
        for child in psutil.Process(self.process.pid).children():
            command = " ".join(child.cmdline())
            kind = next(k for k, marker in KINDS.items() if marker in command)
            assert kind not in found, f"two {kind} processes: {command}"
            found[kind] = child
        return found

    def tree(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def worker(self) -> dict:
        """Our cluster's entry in /healthz, once it runs tasks."""

        def ready():
            check = self.health()["checks"]["worker"]
            pid = self.children()["worker"].pid
            ours = [c for c in check.get("clusters", []) if c["pid"] == pid]
            # Running, with its workers, and a heartbeat that ran since this cluster started.
            fresh = ours and ours[0]["workers"] and check["heartbeat_age"] < ours[0]["uptime"]
            return check.get("state") == "running" and fresh and ours[0]

        return self.wait(ready, timeout=120, what="the worker to run its heartbeat")


KINDS = {"web": "uvicorn tradingportal.asgi:application", "worker": "manage.py qcluster",
         "ingestion": "manage.py run_ingestion"}  # fmt: skip


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_empty(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def runner_env(tmp_path: Path, *, redis: bool, port: int, **extra: str) -> dict[str, str]:
    env = portal_env(redis=redis)
    for name in ("DEBUG", "KITE_API_KEY", "KITE_ACCESS_TOKEN", "KITE_ACCESS_TOKEN_FILE", "KITE_TICKER_URL"):
        env.pop(name, None)
    env.update(
        PORT=str(port),
        ENV_FILE=str(tmp_path / "portal.env"),
        WORKER_CACHE_DIR=str(tmp_path / "worker-cache"),
        # The runner empties its metrics folder at start: one of its own, not another test's.
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        Q_CLUSTER_NAME=f"e2e{os.getpid()}",  # a queue of its own on a shared Redis
        PORTAL_ADMIN_USER="operator-e2e",
        PORTAL_ADMIN_PASSWORD="desk-pass-123",
        HEALTHZ_TOKEN=TOKEN,
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def portal(tmp_path: Path, env: dict[str, str]) -> Iterator[Portal]:
    """The runner as `make run` starts it (its own session, as a terminal or systemd would);
    always stopped, with everything it started."""
    log = tmp_path / "runner.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "tradingportal.runner"], cwd=BASE_DIR, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    started = Portal(process, int(env["PORT"]), log)

    def answering():
        if process.poll() is not None:  # pytest.fail is not retried by wait_for
            pytest.fail(f"the runner exited {process.returncode}: {started.output()[-3000:]}")
        return started.health()["checks"]["database"]["ok"]

    try:
        started.wait(answering, timeout=180, what="the portal to answer /healthz")
        yield started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # Whatever this runner started and left (a test that failed midway, a sentinel that
        # outlived a killed cluster), found by the environment only it gave its children.
        for leftover in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if leftover.environ().get("ENV_FILE") == env["ENV_FILE"]:
                    leftover.kill()


def stopped_cleanly(started: Portal, how) -> None:
    """Stop the portal with ``how``; exit 0 and nothing left of any child's group."""
    tree = started.tree()
    groups = {os.getpgid(child.pid) for child in started.children().values()}
    how()
    assert started.process.wait(timeout=90) == 0, started.output()[-3000:]
    psutil.wait_procs(tree, timeout=30)
    assert not [p for p in tree if alive(p)], started.output()[-3000:]
    assert all(group_empty(pgid) for pgid in groups)
    output = started.output()
    assert "[portal] stopped" in output
    # Every child stopped by itself on one SIGTERM: none had to be killed.
    assert "did not stop in" not in output and "killed what was left" not in output, output[-3000:]


def assert_children(started: Portal, expected: set[str]) -> dict[str, psutil.Process]:
    children = started.children()
    assert set(children) == expected
    runner_group = os.getpgid(started.process.pid)
    for child in children.values():
        assert os.getpgid(child.pid) == child.pid != runner_group  # each its own process group
    return children


def test_runner_serves_the_portal_and_stops_cleanly_on_ctrl_c(tmp_path):
    port = free_port()
    env = runner_env(
        tmp_path, redis=False, port=port, DATABASE_URL=f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    )
    env.pop("SECRET_KEY")  # a fresh checkout: the runner writes .env
    with portal(tmp_path, env) as started:
        # No REDIS_URL and no Kite credentials: web (with the simulated feed) and worker.
        assert_children(started, {"web", "worker"})
        health = started.wait(lambda: started.health()["ingestion"].get("running") and started.health(),
                              timeout=60, what="the feed's heartbeat")  # fmt: skip
        assert health["ok"] is True and health["ingestion"]["feed"] == "simulator"
        assert started.worker()["workers"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            anonymous = json.load(response)
        assert set(anonymous) == {"ok", "status", "checks", "kite"} and anonymous["status"] == "ok"
        assert anonymous["kite"] == {"state": "not_configured"}  # the simulator: no Kite configured
        with urllib.request.urlopen(f"http://localhost:{port}/admin/login/", timeout=5) as response:
            assert "Kite Trading Desk" in response.read().decode()
        output = started.output()
        assert "feed: the built-in simulator" in output and "ingestion runs inside the web process" in output
        assert f"http://127.0.0.1:{port}/" in output
        assert "Created admin user 'operator-e2e'" in output
        assert "desk-pass-123" not in output
        assert "SECRET_KEY=" in (tmp_path / "portal.env").read_text()  # manage.py works by hand afterwards

        stopped_cleanly(started, lambda: started.process.send_signal(signal.SIGINT))


@pytest.mark.django_db(transaction=True)
def test_kite_credentials_kept_only_in_the_env_file_make_the_runner_use_kite(tmp_path, django_user_model):
    """The desk keeps its Kite key and token in .env: the runner must stream from Kite (here a
    local server speaking Kite's protocol that accepts only that key and token), not the
    simulator; a supervisor's group-wide SIGTERM stops it cleanly."""
    InstrumentFactory(instrument_token=256265, tradingsymbol="NIFTY 50", segment="INDICES", is_active=True,
                      last_price="24350.50", lot_size=0, tick_size="0")  # fmt: skip
    kite_port, port = free_port(), free_port()
    env = runner_env(tmp_path, redis=False, port=port)
    (tmp_path / "portal.env").write_text(
        f"KITE_API_KEY=desk-key\nKITE_ACCESS_TOKEN=desk-token-0123456789\nKITE_TICKER_URL=ws://127.0.0.1:{kite_port}\n"
    )
    kite = [sys.executable, "manage.py", "run_simulator", "--port", str(kite_port), "--api-key", "desk-key",
            "--access-token", "desk-token-0123456789"]  # fmt: skip
    with (
        running(kite, portal_env(redis=False), tmp_path / "kite.log") as fake_kite,
        portal(tmp_path, env) as started,
    ):
        assert "feed: Kite at ws://127.0.0.1:" in started.output()
        assert "the built-in simulator" not in started.output()
        feed = started.wait(lambda: started.health()["ingestion"].get("state") == "connected" and started.health(),
                            timeout=60, what="the feed to connect to the Kite server")["ingestion"]  # fmt: skip
        assert feed["feed"] == "kite" and feed["url"] == f"ws://127.0.0.1:{kite_port}"
        web = started.children()["web"]
        connections = psutil.Process(fake_kite.pid).net_connections(kind="tcp")
        assert any(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == kite_port for c in connections)
        assert any(c.raddr and c.raddr.port == kite_port for c in web.net_connections(kind="tcp"))
        assert "desk-token-0123456789" not in started.output()

        stopped_cleanly(started, lambda: os.killpg(started.process.pid, signal.SIGTERM))


@pytest.mark.parametrize("redis", [False, pytest.param(True, marks=[requires_redis, pytest.mark.postgres])],
                         ids=["embedded", "postgres+redis"])  # fmt: skip
@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_loses_no_task_and_a_group_sigterm_stops_everything(
    tmp_path, django_user_model, redis
):
    from django.contrib.auth.models import Permission
    from rest_framework.authtoken.models import Token

    from instruments.models import SyncRun
    from tests.instruments.dumps import kite_csv, nifty_universe

    syncer = django_user_model.objects.create_user(username="syncer", password="unused-pass-123")
    syncer.user_permissions.add(Permission.objects.get(codename="run_sync"))
    token = Token.objects.create(user=syncer).key
    port = free_port()
    with serving({"/instruments": kite_csv(nifty_universe())}) as dumps:
        env = runner_env(tmp_path, redis=redis, port=port, KITE_INSTRUMENTS_URL=f"{dumps}/instruments")
        with portal(tmp_path, env) as started:
            expected = {"web", "worker", "ingestion"} if redis else {"web", "worker"}
            assert_children(started, expected)
            cluster = started.wait(lambda: (c := started.worker()) and not c["busy"] and c, timeout=60,
                               what="the workers to be idle")  # fmt: skip

            # What the OOM killer does: SIGKILL the workers. One of the idle workers holds
            # django-q2's queue lock, so the queue is wedged from now on; a sync queued now must
            # still complete, within a minute.
            for pid in cluster["workers"]:
                os.kill(pid, signal.SIGKILL)
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/instruments/sync/", method="POST",
                                             data=json.dumps({"source": "kite"}).encode(),
                                             headers={"Authorization": f"Token {token}",
                                                      "Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 202
            run = started.wait(lambda: SyncRun.objects.filter(status=SyncRun.Status.OK).first(), timeout=60,
                               what="the queued sync to complete")  # fmt: skip
            assert run.inserted == len(nifty_universe())
            assert "worker stopped running tasks" in started.output()
            assert not [pid for pid in cluster["workers"] if psutil.pid_exists(pid) and
                        psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]  # fmt: skip

            # SIGKILL of the cluster's main process: its sentinel and workers must not live on.
            old = started.children()["worker"]
            old_group = [p for p in started.tree() if os.getpgid(p.pid) == old.pid]
            assert len(old_group) >= 3  # main, sentinel, workers, monitor, pusher
            old.kill()
            started.wait(lambda: started.children().get("worker") and started.children()["worker"].pid != old.pid,
                         timeout=60, what="the runner to start a new worker")  # fmt: skip
            psutil.wait_procs(old_group, timeout=30)
            assert not [p for p in old_group if alive(p)]
            assert started.worker()["workers"]  # the new one runs tasks

            # systemd and most supervisors signal the whole group: stopped once, cleanly.
            stopped_cleanly(started, lambda: os.killpg(started.process.pid, signal.SIGTERM))
    if redis:
        from tradingportal.broker import RedisBroker

        RedisBroker(list_key=env["Q_CLUSTER_NAME"]).delete_queue()
