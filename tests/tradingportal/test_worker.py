"""The worker's delivery and liveness: brokers that give back what a dead cluster took, the
heartbeat, and the states /healthz and the runner decide on. Real processes killing a real
cluster are in tests/e2e/test_runner.py."""

import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.core.cache import caches
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.brokers.orm import ORM
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signals import post_execute, post_execute_in_worker, pre_execute
from django_q.signing import SignedPackage
from django_q.status import Stat, Status

from tests.conftest import requires_redis
from tradingportal import worker
from tradingportal.broker import OrmBroker, RedisBroker
from tradingportal.worker import HEARTBEAT_FUNC, QUEUED_KEY, RAN_KEY, worker_liveness, worker_probe

pytestmark = pytest.mark.django_db
HOST = socket.gethostname()
embedded_only = pytest.mark.skipif(
    bool(django_settings.REDIS_URL), reason="the ORM broker is the embedded one"
)


@pytest.fixture(autouse=True)
def worker_cache(settings, tmp_path):
    """This test's own worker cache (the file cache of the embedded arrangement, or Redis)."""
    if settings.WORKER_CACHE != "default":
        caches_setting = {**settings.CACHES, settings.WORKER_CACHE: {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp_path / "worker")}}  # fmt: skip
        settings.CACHES = caches_setting
    cache = caches[settings.WORKER_CACHE]
    cache.clear()
    _forget_stats()
    yield cache
    _forget_stats()
    if settings.REDIS_URL:
        RedisBroker().delete_queue()


def _stock_broker():
    return Redis() if Conf.DJANGO_REDIS else ORM()


def _forget_stats():
    broker = _stock_broker()
    if isinstance(broker, Redis):
        for key in broker.connection.keys(f"{Conf.Q_STAT}:*"):
            broker.connection.delete(key)
    else:
        caches[Conf.CACHE].delete(Conf.Q_STAT)


def cluster(*, pid=None, workers=(101, 102), started_ago=300.0, host=HOST):
    """A cluster's stats as its sentinel (here: this process) saves them."""
    status = Status(pid=pid or os.getpid(), cluster_id=uuid.uuid4())
    status.workers, status.sentinel, status.host = list(workers), os.getpid(), host
    status.tob = timezone.now() - timedelta(seconds=started_ago)
    status.status = "Idle"
    _stock_broker().set_stat(Stat.get_key(status.cluster_id), SignedPackage.dumps(status, True), 60)
    return status


def stamp(cache, *, queued_ago=None, ran_ago=None):
    now = time.time()
    if queued_ago is not None:
        cache.set(QUEUED_KEY, {"at": now - queued_ago}, timeout=None)
    if ran_ago is not None:
        cache.set(RAN_KEY, {"at": now - ran_ago}, timeout=None)


# --- liveness ---------------------------------------------------------------------------


def test_no_cluster_reporting_is_down(worker_cache):
    stamp(worker_cache, queued_ago=1, ran_ago=0.5)
    assert worker_liveness()["state"] == "down"
    assert worker_liveness()["ok"] is False


def test_a_cluster_whose_heartbeat_runs_is_running(worker_cache):
    cluster()
    stamp(worker_cache, queued_ago=3, ran_ago=2.9)
    liveness = worker_liveness()
    assert liveness["state"] == "running" and liveness["ok"] is True
    assert liveness["heartbeat_age"] == pytest.approx(2.9, abs=0.5)
    assert liveness["clusters"][0]["workers"] == [101, 102] and liveness["clusters"][0]["busy"] == 0


def test_a_new_cluster_waiting_for_its_first_heartbeat_is_starting(worker_cache):
    cluster(started_ago=2)
    stamp(worker_cache, queued_ago=1)
    assert worker_liveness()["state"] == "starting"


def test_a_heartbeat_waiting_too_long_with_no_worker_busy_is_stuck(settings, worker_cache):
    cluster()
    stamp(
        worker_cache, queued_ago=settings.WORKER_STALE_SECONDS + 5, ran_ago=settings.WORKER_STALE_SECONDS + 8
    )
    liveness = worker_liveness()
    assert liveness["state"] == "stuck" and liveness["ok"] is False
    assert liveness["heartbeat_waiting"] > settings.WORKER_STALE_SECONDS


def test_workers_all_in_long_tasks_are_busy_not_stuck(settings, worker_cache):
    cluster(workers=(101,))
    stamp(
        worker_cache, queued_ago=settings.WORKER_STALE_SECONDS + 5, ran_ago=settings.WORKER_STALE_SECONDS + 8
    )
    worker_cache.set(worker.BUSY_KEY.format(host=HOST, pid=101), {"since": time.time() - 600, "task": "sync"})
    assert worker_liveness()["state"] == "busy"
    # A busy mark left by a worker that is gone (killed mid-task) does not count.
    worker_cache.delete(worker.BUSY_KEY.format(host=HOST, pid=101))
    worker_cache.set(worker.BUSY_KEY.format(host=HOST, pid=555), {"since": time.time() - 600, "task": "sync"})
    assert worker_liveness()["state"] == "stuck"


def test_a_restarted_cluster_is_blamed_only_for_the_time_it_has_existed(settings, worker_cache):
    cluster(started_ago=3)  # started after the heartbeat that never ran was queued
    stamp(
        worker_cache,
        queued_ago=settings.WORKER_STALE_SECONDS + 30,
        ran_ago=settings.WORKER_STALE_SECONDS + 35,
    )
    assert worker_liveness()["state"] == "starting"


# --- the heartbeat ------------------------------------------------------------------------


def test_the_probe_queues_one_heartbeat_at_a_time(settings, worker_cache):
    broker = get_broker()
    before = broker.queue_size()
    assert worker_probe(broker=broker) is True
    assert broker.queue_size() == before + 1
    queued = worker_cache.get(QUEUED_KEY)["at"]
    assert worker_probe(broker=broker) is False  # the last one has not run yet
    assert broker.queue_size() == before + 1
    worker_cache.set(RAN_KEY, {"at": time.time()})
    assert worker_probe(broker=broker) is True
    assert worker_cache.get(QUEUED_KEY)["at"] > queued


def test_a_heartbeat_waiting_past_the_stale_time_gets_company_but_keeps_its_age(settings, worker_cache):
    broker = get_broker()
    stamp(worker_cache, queued_ago=settings.WORKER_STALE_SECONDS + 1)
    queued = worker_cache.get(QUEUED_KEY)["at"]
    before = broker.queue_size()
    assert worker_probe(broker=broker) is True
    assert broker.queue_size() == before + 1
    assert worker_cache.get(QUEUED_KEY)["at"] == queued  # how long the cluster has been wedged


def test_the_heartbeat_is_stamped_when_its_result_reached_the_monitor(worker_cache):
    post_execute.send(
        sender="django_q", task={"func": "instruments.tasks.deactivate_expired_task", "success": True}
    )
    assert worker_cache.get(RAN_KEY) is None
    post_execute.send(sender="django_q", task={"func": HEARTBEAT_FUNC, "success": True, "result": 4242})
    assert worker_cache.get(RAN_KEY)["pid"] == 4242


def test_a_worker_is_busy_while_it_runs_a_task(worker_cache):
    key = worker.BUSY_KEY.format(host=HOST, pid=os.getpid())
    pre_execute.send(sender="django_q", func=print, task={"name": "sync kite by desk"})
    assert worker_cache.get(key)["task"] == "sync kite by desk"
    post_execute_in_worker.send(sender="django_q", func=print, task={"name": "sync kite by desk"})
    assert worker_cache.get(key) is None


def test_the_sentinels_stat_save_names_the_cluster_and_queues_the_heartbeat(worker_cache):
    broker = get_broker()
    cluster_id = uuid.uuid4()
    status = Status(pid=os.getpid(), cluster_id=cluster_id)
    before = broker.queue_size()
    broker.set_stat(Stat.get_key(cluster_id), SignedPackage.dumps(status, True), 3)
    assert broker.owner == f"{HOST}|{os.getpid()}|{cluster_id}"
    assert broker.queue_size() == before + 1
    broker.set_stat(Stat.get_key(cluster_id), SignedPackage.dumps(status, True), 3)
    assert broker.queue_size() == before + 1  # the next one once WORKER_HEARTBEAT_SECONDS have passed


# --- the Redis broker: at-least-once ------------------------------------------------------


def _package(name):
    return SignedPackage.dumps({"id": uuid.uuid4().hex, "name": name, "func": "math.floor", "args": (1.5,),
                                "kwargs": {}})  # fmt: skip


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _taken_by(owner):
    """A broker of the cluster ``owner`` that has taken the first task of the queue."""
    broker = RedisBroker()
    broker.owner = owner
    [(ack_id, task)] = broker.dequeue()
    return broker, ack_id, task


@requires_redis
def test_a_taken_task_stays_taken_until_it_is_acknowledged():
    broker = RedisBroker()
    broker.enqueue(_package("first"))
    _, ack_id, task = _taken_by(f"{HOST}|{os.getpid()}|me")
    assert SignedPackage.loads(task)["name"] == "first"
    assert broker.queue_size() == 0 and broker.lock_size() == 1
    broker.acknowledge(ack_id)
    assert broker.lock_size() == 0


@requires_redis
def test_tasks_taken_by_a_cluster_that_is_gone_go_back_to_the_front_of_the_queue(caplog):
    broker = RedisBroker()
    broker.enqueue(_package("taken by the dead cluster"))
    _taken_by(f"{HOST}|{_dead_pid()}|{uuid.uuid4()}")
    broker.enqueue(_package("queued after"))
    assert broker.recover() == 1
    assert broker.lock_size() == 0
    [(_, task)] = broker.dequeue()
    assert SignedPackage.loads(task)["name"] == "taken by the dead cluster"
    assert "gave 1 task(s) back to the queue" in caplog.text
    assert broker.recover() == 0  # given back once


@requires_redis
def test_tasks_of_a_live_cluster_are_left_alone_until_retry_has_passed(monkeypatch):
    alive = cluster(pid=os.getpid())
    owner = f"{HOST}|{os.getpid()}|{alive.cluster_id}"  # this process, with its stats: alive
    broker = RedisBroker()
    broker.enqueue(_package("running"))
    _taken_by(owner)
    assert broker.recover() == 0 and broker.lock_size() == 1
    assert (
        broker.recover(now=time.time() + Conf.RETRY + 1) == 1
    )  # never acknowledged: given back, as the ORM does


@requires_redis
def test_a_cluster_on_another_host_is_given_a_grace_before_its_tasks_go_back():
    broker = RedisBroker()
    broker.enqueue(_package("elsewhere"))
    _taken_by(f"other-host|1234|{uuid.uuid4()}")  # no stats: missing since now
    now = time.time()
    assert broker.recover(now=now) == 0
    assert broker.recover(now=now + 31) == 1


@requires_redis
def test_a_redis_outage_does_not_kill_the_pusher(caplog):
    import redis

    broker = RedisBroker()
    broker.owner = "x|1|y"
    broker.connection = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    broker._setup()
    assert broker.dequeue() is None and broker.dequeue() is None
    assert caplog.text.count("taking a task from Redis failed") == 1


# --- the ORM broker -----------------------------------------------------------------------


@embedded_only
def test_a_starting_cluster_releases_what_a_dead_one_took(worker_cache):
    broker = OrmBroker()
    broker.enqueue(_package("taken"))
    assert broker.dequeue()  # locked until now + retry by the "dead" cluster
    assert broker.queue_size() == 0
    me = Status(pid=os.getpid(), cluster_id=uuid.uuid4())
    broker.set_stat(Stat.get_key(me.cluster_id), SignedPackage.dumps(me, True), 3)
    assert not OrmQ.objects.filter(lock__gt=timezone.now()).exists()  # free to be taken again


@embedded_only
def test_the_stats_a_just_killed_cluster_left_do_not_count_as_alive(worker_cache):
    dead = cluster()
    dead.sentinel = _dead_pid()
    _stock_broker().set_stat(Stat.get_key(dead.cluster_id), SignedPackage.dumps(dead, True), 3)
    broker = OrmBroker()
    broker.enqueue(_package("taken"))
    assert broker.dequeue()
    me = Status(pid=os.getpid(), cluster_id=uuid.uuid4())
    broker.set_stat(Stat.get_key(me.cluster_id), SignedPackage.dumps(me, True), 3)
    assert not OrmQ.objects.filter(lock__gt=timezone.now()).exists()


@embedded_only
def test_a_starting_cluster_leaves_the_tasks_of_a_live_one(worker_cache):
    cluster()  # another cluster, alive
    broker = OrmBroker()
    broker.enqueue(_package("taken"))
    assert broker.dequeue()
    me = Status(pid=os.getpid(), cluster_id=uuid.uuid4())
    broker.set_stat(Stat.get_key(me.cluster_id), SignedPackage.dumps(me, True), 3)
    assert OrmQ.objects.filter(lock__gt=timezone.now()).count() == 1  # back after `retry`, as usual


def test_settings_refuse_a_heartbeat_slower_than_the_stale_time():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tradingportal.settings", "SECRET_KEY": "x" * 50,
           "WORKER_HEARTBEAT_SECONDS": "30", "WORKER_STALE_SECONDS": "20"}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert "WORKER_HEARTBEAT_SECONDS must be above 0 and below WORKER_STALE_SECONDS" in result.stderr


@requires_redis
def test_an_acknowledgement_that_fails_does_not_kill_the_monitor(caplog):
    import redis

    broker = RedisBroker()
    broker.connection = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    broker._setup()
    broker.acknowledge(b"task")
    broker.acknowledge(b"task")
    assert caplog.text.count("acknowledging a finished task in Redis failed") == 1
