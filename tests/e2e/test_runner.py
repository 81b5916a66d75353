"""One-command mode as a user runs it: real processes on the embedded defaults."""

import json
import os
import signal
import subprocess
import sys
import urllib.request

import psutil
import pytest

from tests.helpers import BASE_DIR, free_port, wait_for

pytestmark = pytest.mark.e2e


def test_runner_serves_the_portal_and_stops_cleanly_on_ctrl_c(tmp_path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "HTTPS")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tradingportal.settings",
        DATABASE_URL=f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        PORT=str(port),
        PORTAL_ADMIN_USER="desk",
        PORTAL_ADMIN_PASSWORD="desk-pass-123",
        ENV_FILE=str(tmp_path / "portal.env"),
    )
    log_path = tmp_path / "runner.log"
    with open(log_path, "wb") as log:
        runner = subprocess.Popen(
            [sys.executable, "-m", "tradingportal.runner"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def healthy():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return json.load(response)

        body = wait_for(healthy, timeout=90, interval=0.5, what="the portal to answer /healthz")
        assert body["ok"] is True
        # No REDIS_URL and no Kite credentials: the simulated feed runs inside the web process.
        feed = wait_for(lambda: healthy()["ingestion"].get("running") and healthy()["ingestion"], timeout=30,
                        what="the feed's heartbeat")  # fmt: skip
        assert feed["feed"] == "simulator"
        with urllib.request.urlopen(f"http://localhost:{port}/admin/login/", timeout=5) as response:
            assert "Kite Trading Desk" in response.read().decode()
        children = psutil.Process(runner.pid).children(recursive=True)
        assert len(children) >= 2  # web (with the feed) and worker
        output = log_path.read_text()
        assert f"http://127.0.0.1:{port}/" in output
        assert "Created admin user 'desk'" in output
        assert "desk-pass-123" not in output
        assert "SECRET_KEY=" in (tmp_path / "portal.env").read_text()  # manage.py works by hand afterwards

        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=40) == 0
        psutil.wait_procs(children, timeout=10)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
