"""Open sockets per user: a cap that holds across processes and survives crashes."""

import pytest

from ingestion import sockets
from ingestion.sockets import LEASE_SECONDS, socket_claim, socket_release, socket_renew, sockets_open
from tests.conftest import requires_redis
from tests.helpers import portal_env, run_python


@pytest.fixture
def clock(monkeypatch):
    now = {"t": 1_764_560_100.0}
    monkeypatch.setattr(sockets.time, "time", lambda: now["t"])
    return now


def test_a_user_gets_at_most_the_limit_and_a_closed_socket_frees_its_slot(clock):
    assert socket_claim(user_id=7, socket_id="a", limit=2)
    assert socket_claim(user_id=7, socket_id="b", limit=2)
    assert not socket_claim(user_id=7, socket_id="c", limit=2)
    assert socket_claim(user_id=8, socket_id="x", limit=2)  # another user is not affected
    socket_release(user_id=7, socket_id="a")
    assert socket_claim(user_id=7, socket_id="c", limit=2)
    assert sockets_open(user_id=7) == 2


def test_slots_of_a_crashed_worker_lapse_and_renewed_ones_do_not(clock):
    assert socket_claim(user_id=7, socket_id="kept", limit=2)
    assert socket_claim(user_id=7, socket_id="orphan", limit=2)  # its worker is SIGKILLed
    clock["t"] += LEASE_SECONDS * 0.6
    socket_renew(user_id=7, socket_id="kept")
    assert not socket_claim(user_id=7, socket_id="new", limit=2)
    clock["t"] += LEASE_SECONDS * 0.6  # the orphan's lease is over, the renewed one is not
    assert sockets_open(user_id=7) == 1
    assert socket_claim(user_id=7, socket_id="new", limit=2)
    assert not socket_claim(user_id=7, socket_id="one-too-many", limit=2)


@requires_redis
def test_the_count_is_shared_by_every_process(settings):
    """Two web workers are two processes: the slots one takes, the other sees."""
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    code = (
        "import django; django.setup()\n"
        "from ingestion.sockets import socket_claim\n"
        "print(socket_claim(user_id=7, socket_id='worker-2', limit=2))\n"
    )
    env = portal_env(redis=True, CACHE_KEY_PREFIX=prefix)
    assert socket_claim(user_id=7, socket_id="worker-1", limit=2)
    assert socket_claim(user_id=7, socket_id="worker-1b", limit=2)
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
    socket_release(user_id=7, socket_id="worker-1b")
    result = run_python(code, env)
    assert result.stdout.strip().splitlines()[-1] == "True"
