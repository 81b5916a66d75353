"""The suite in parallel (pytest-xdist, ``make test PYTEST_WORKERS=N``): each worker and the
processes its tests start keep to their own Redis database, worker cache folder, test
database and ports, and the run's summary still counts what was skipped for lack of a service."""

import json
import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings

from tests import helpers
from tests.conftest import requires_redis
from tests.helpers import BASE_DIR
from tests.settings import worker_redis_url

# What a test process chose for itself (tests/settings.py), not for a new run to inherit.
OWN = ("DATABASE_URL", "REDIS_URL", "CHROMIUM_PATH", "WORKER_CACHE_DIR", "TESTS_WORKER_REDIS_URL")


def fresh_env(**env: str) -> dict[str, str]:
    """The environment of a new test run as a person's shell gives it (SQLite, no Redis)."""
    base = {k: v for k, v in os.environ.items() if k not in OWN and not k.startswith("PYTEST_XDIST")}
    return {**base, "ENV_FILE": "/dev/null", **env}


def pytest_run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_worker_n_uses_redis_database_number_plus_n():
    assert worker_redis_url("redis://127.0.0.1:6379/8", "gw0") == "redis://127.0.0.1:6379/8"
    assert worker_redis_url("redis://127.0.0.1:6379/8", "gw3") == "redis://127.0.0.1:6379/11"
    assert worker_redis_url("redis://:pass@cache:6379", "gw2") == "redis://:pass@cache:6379/2"
    assert worker_redis_url("rediss://cache:6380/1?ssl_cert_reqs=none", "gw1") == (
        "rediss://cache:6380/2?ssl_cert_reqs=none"
    )
    # redis-py reads ?db= before the path; a socket has nothing else.
    assert worker_redis_url("redis://cache:6379/0?db=4", "gw1") == "redis://cache:6379/0?db=5"
    assert worker_redis_url("unix:///run/redis.sock", "gw2") == "unix:///run/redis.sock?db=2"


SHOW = """
import json, os, subprocess, sys
import tests.settings as settings
seen = {"settings": settings.REDIS_URL, "cache": settings.CACHES["default"]["LOCATION"],
        "channel_layer": settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"],
        "environment": os.environ["REDIS_URL"]}
if sys.argv[1:] != ["child"]:  # and a process this one starts, with the environment it inherits
    seen["child"] = json.loads(subprocess.check_output([sys.executable, __file__, "child"]))
print(json.dumps(seen))
"""


def show(tmp_path, **env: str) -> dict:
    """The Redis a test process with ``env`` uses (settings only: nothing connects)."""
    script = tmp_path / "show.py"
    script.write_text(SHOW)
    env = fresh_env(PYTHONPATH=str(BASE_DIR), **env)
    return json.loads(
        subprocess.check_output([sys.executable, str(script)], cwd=BASE_DIR, env=env, timeout=120)
    )


def test_an_xdist_worker_and_the_processes_it_starts_use_its_own_redis_database(tmp_path):
    seen = show(tmp_path, REDIS_URL="redis://:pw@127.0.0.1:6379/8", PYTEST_XDIST_WORKER="gw2")
    moved = "redis://:pw@127.0.0.1:6379/10"
    child = seen.pop("child")
    assert seen == {"settings": moved, "cache": moved, "channel_layer": moved, "environment": moved}
    assert child == seen  # inherited as it is, not moved a second time
    assert show(tmp_path, REDIS_URL="redis://127.0.0.1:6379/8")["settings"] == "redis://127.0.0.1:6379/8"


def test_workers_keep_their_own_state_and_the_skip_summary_counts_what_they_skipped(tmp_path):
    """A real run on two workers, each running every sample (``--dist each``). No
    PostgreSQL, no Redis, and a PATH without a chromium."""
    samples = ["tests/tradingportal/parallel_samples.py", "tests/tradingportal/marker_samples.py"]
    result = pytest_run("-n", "2", "--dist", "each", "-rs", *samples,
                        env=fresh_env(PARALLEL_SAMPLES_OUT=str(tmp_path), PATH=str(tmp_path)))  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "4 passed, 10 skipped" in out
    lines = [line for line in out.splitlines() if line.startswith(("skipped for lack of", "nothing skipped"))]
    assert lines == ["skipped for lack of: PostgreSQL 2, Redis 2, Chromium 2"], out

    seen = {path.stem: json.loads(path.read_text()) for path in tmp_path.glob("gw*.json")}
    assert sorted(seen) == ["gw0", "gw1"]
    assert seen["gw0"]["worker_cache"] != seen["gw1"]["worker_cache"]
    assert seen["gw0"]["database"] != seen["gw1"]["database"]
    for worker, what in seen.items():
        assert what["child"] == {"worker_cache": what["worker_cache"], "seen": worker}
        assert not os.path.exists(what["worker_cache"])  # removed when the worker finished


def test_two_workers_are_never_handed_the_same_port(monkeypatch):
    shares = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
        shares.append({helpers.free_port() for _ in range(30)})
    assert [len(ports) for ports in shares] == [30, 30, 30]  # and none handed out twice
    assert not (shares[0] & shares[1] or shares[0] & shares[2] or shares[1] & shares[2])


@requires_redis
def test_a_redis_without_enough_databases_stops_the_run_saying_what_to_change():
    """Nothing is flushed: the run stops before any worker starts."""
    url = urlunsplit(urlsplit(settings.REDIS_URL)._replace(path="/15", query=""))
    result = pytest_run("-n", "2", "tests/tradingportal/marker_samples.py", env=fresh_env(REDIS_URL=url))
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "2 test workers need Redis databases up to 16" in result.stderr
    assert "fewer workers (make test PYTEST_WORKERS=...)" in result.stderr
