"""django-q2 brokers that lose no task when a cluster process is killed.

Why (django-q2 1.11.1): the sentinel hands tasks from the broker to its worker processes
through a ``multiprocessing.Queue`` filled by the pusher. An idle worker waits in
``Queue.get()`` holding the queue's read lock, a process-shared semaphore. When that
worker is SIGKILLed (the OOM killer, an operator), the lock is never released: the
"reincarnated" worker and every other one wait for it forever, while the pusher goes on
taking tasks from Redis into a pipe nobody reads. The stock Redis broker takes a task with
``BLPOP``, so whatever the pusher took is gone with the cluster, and nothing notices.

The cure for the lock is to restart the whole cluster (``tradingportal.runner`` does when
``tradingportal.worker.worker_liveness()`` says it is stuck); these brokers make that
restart lose nothing:

- ``RedisBroker`` (with ``REDIS_URL``) takes each task atomically into a *taken* set,
  recording when and by which cluster; the monitor's acknowledgement (after the result is
  saved) removes it. Tasks taken by a cluster that is gone (its sentinel's process ended
  on this host, or its django-q2 stats expired a while ago) go back to the front of the
  queue at once; tasks not acknowledged within ``Q_CLUSTER["retry"]`` go back like the ORM
  broker's. Delivery is at least once, as django-q2 documents for its ORM broker: tasks
  that must not overlap take a lock.
- ``OrmBroker`` (the embedded default) already redelivers after ``retry``; when a cluster
  starts and no other cluster is alive, it releases the tasks a dead one had taken.

Both use the sentinel's stat save (every guard cycle, 0.5 s) as the cluster's own clock:
the first one names the cluster (its owner id), and every ``WORKER_HEARTBEAT_SECONDS`` one
queues the heartbeat task that proves tasks really run.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import psutil
from django.conf import settings
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf
from django_q.status import Stat

from tradingportal.logging import RepeatedFailure
from tradingportal.worker import worker_probe

logger = logging.getLogger(__name__)

# How often a pusher looks for tasks to give back, and how long a cluster on another host
# may miss its stats (3 s TTL, refreshed every 0.5 s) before its tasks are given back.
RECOVER_EVERY_SECONDS = 5.0
OWNER_GRACE_SECONDS = 30.0

# Atomically: take the first task and record who took it when.
_TAKE = """
local task = redis.call('LPOP', KEYS[1])
if task then
  redis.call('ZADD', KEYS[2], ARGV[1], task)
  redis.call('HSET', KEYS[3], task, ARGV[2])
end
return task
"""
# Atomically: give a taken task back to the front of the queue, once.
_GIVE_BACK = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('LPUSH', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


def _process_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ClusterClock:
    """The part both brokers share: the cluster's name for itself and its heartbeat."""

    owner = ""
    _next_probe = 0.0
    _stat_failure: RepeatedFailure | None = None

    def set_stat(self, key: str, value: str, timeout: int) -> None:
        # Called by the sentinel every guard cycle (django_q.status.Stat.save).
        failure = self._stat_failure or RepeatedFailure(logger, "saving the worker cluster's status")
        self._stat_failure = failure
        try:
            super().set_stat(key, value, timeout)  # type: ignore[misc]
            if not self.owner:
                cluster_id = key.rsplit(":", 1)[-1]
                self.owner = f"{socket.gethostname()}|{os.getpid()}|{cluster_id}"
                self.cluster_started()
            now = time.monotonic()
            if now >= self._next_probe:
                self._next_probe = now + settings.WORKER_HEARTBEAT_SECONDS
                worker_probe(broker=self)
        except Exception as exc:  # noqa: BLE001 - Redis or the database away: logged once, then rarely
            failure.failed(exc)
        else:
            failure.succeeded()

    def cluster_started(self) -> None:
        """The cluster's first stat save, before its pusher and workers start."""


class RedisBroker(ClusterClock, Redis):
    """django-q2's Redis broker with at-least-once delivery (see the module docstring)."""

    def __init__(self, list_key: str | None = None) -> None:
        super().__init__(list_key)
        self._setup()

    def _setup(self) -> None:
        self.taken_key = f"{self.list_key}:taken"  # task -> when it was taken
        self.owners_key = f"{self.list_key}:owners"  # task -> the cluster that took it
        self.host = socket.gethostname()
        self._take = self.connection.register_script(_TAKE)
        self._give_back = self.connection.register_script(_GIVE_BACK)
        self._next_recovery = 0.0
        self._missing_since: dict[str, float] = {}
        self._pull_failure = RepeatedFailure(logger, "taking a task from Redis")
        self._ack_failure = RepeatedFailure(logger, "acknowledging a finished task in Redis")

    def __getstate__(self) -> Any:
        return (*super().__getstate__(), self.owner)

    def __setstate__(self, state: Any) -> None:
        super().__setstate__(state[:2])
        self.owner = state[2]
        self._setup()

    # --- delivery -------------------------------------------------------------------

    def dequeue(self) -> list[tuple[Any, Any]] | None:
        try:
            now = time.time()
            if now >= self._next_recovery:
                self._next_recovery = now + RECOVER_EVERY_SECONDS
                self.recover(now=now)
            owner = self.owner or f"{self.host}|{os.getpid()}|-"
            task = self._take(keys=[self.list_key, self.taken_key, self.owners_key], args=[now, owner])
        except Exception as exc:  # noqa: BLE001 - the pusher keeps trying instead of dying
            self._pull_failure.failed(exc)
            time.sleep(1.0)
            return None
        self._pull_failure.succeeded()
        if task is None:
            time.sleep(Conf.POLL)
            return None
        # The task itself is its acknowledgement id: the monitor hands it back when done.
        return [(task, task)]

    def acknowledge(self, task_id: Any) -> None:
        # In the monitor, after the result is saved. Redis away: the task stays taken and is
        # given back after `retry` (at least once); the monitor must not die of it.
        try:
            with self.connection.pipeline() as pipe:
                pipe.zrem(self.taken_key, task_id)
                pipe.hdel(self.owners_key, task_id)
                pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._ack_failure.failed(exc)
        else:
            self._ack_failure.succeeded()

    def fail(self, task_id: Any) -> None:
        self.acknowledge(task_id)  # an unreadable package is dropped, as the stock broker does

    def delete(self, task_id: Any) -> None:
        self.acknowledge(task_id)

    def lock_size(self) -> int:
        return int(self.connection.zcard(self.taken_key))

    def delete_queue(self) -> Any:
        return self.connection.delete(self.list_key, self.taken_key, self.owners_key)

    # --- giving back what a dead cluster took -----------------------------------------

    def recover(self, *, now: float | None = None) -> int:
        """Give back the tasks of clusters that are gone, and tasks never acknowledged
        within ``retry``; returns how many went back to the queue."""
        now = time.time() if now is None else now
        owners = self.connection.hgetall(self.owners_key)
        if not owners:
            return 0
        taken_at = dict(self.connection.zrange(self.taken_key, 0, -1, withscores=True))
        overdue_before = now - Conf.RETRY
        gone: dict[str, bool] = {}
        given_back = 0
        for task, raw_owner in owners.items():
            owner = raw_owner.decode() if isinstance(raw_owner, bytes) else str(raw_owner)
            if owner not in gone:
                gone[owner] = owner != self.owner and not self._owner_alive(owner, now)
            if gone[owner] or taken_at.get(task, now) < overdue_before:
                given_back += int(
                    self._give_back(keys=[self.list_key, self.taken_key, self.owners_key], args=[task])
                )
        if given_back:
            dead = sorted(o.split("|")[1] for o, is_gone in gone.items() if is_gone)
            logger.warning(
                "gave %s task(s) back to the queue (taken by stopped clusters, sentinel pids %s, or not "
                "acknowledged within %ss)",
                given_back,
                ", ".join(dead) or "-",
                Conf.RETRY,
            )
        return given_back

    def _owner_alive(self, owner: str, now: float) -> bool:
        host, pid, cluster_id = (owner.split("|", 2) + ["", ""])[:3]
        if host == self.host and pid.isdecimal() and not _process_running(int(pid)):
            return False
        if self.connection.exists(Stat.get_key(cluster_id)):
            self._missing_since.pop(owner, None)
            return True
        return now - self._missing_since.setdefault(owner, now) < OWNER_GRACE_SECONDS


class OrmBroker(ClusterClock, ORM):
    """django-q2's ORM broker; a starting cluster releases what a dead one had taken."""

    def cluster_started(self) -> None:
        me, host = self.owner.rsplit("|", 1)[-1], socket.gethostname()
        others = [
            stat
            for stat in Stat.get_all(broker=self)
            if str(stat.cluster_id) != me
            # The stats of a cluster killed a moment ago live on for 3 s: a sentinel gone from
            # this host is not "another cluster".
            and (stat.host != host or _process_running(int(stat.sentinel)))
        ]
        if others:
            return  # another cluster is alive: its tasks come back after `retry`, as usual
        released = (
            self.get_connection()
            .filter(key=self.list_key, lock__gt=timezone.now())
            .update(lock=timezone.now())
        )
        if released:
            logger.warning("released %s task(s) taken by a cluster that stopped", released)
