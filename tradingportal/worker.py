"""The worker's liveness: does the django-q2 cluster really run tasks?

A cluster whose processes are all alive can still run nothing (see ``tradingportal.broker``
for how a killed worker wedges django-q2's queue), so liveness is proven by a task:

- every ``WORKER_HEARTBEAT_SECONDS`` the cluster queues ``worker_heartbeat`` (the brokers
  do, from the sentinel; a new one only once the last has run), and when its result has
  gone through the monitor the heartbeat is stamped;
- every worker stamps itself busy while it runs a task (django-q2's ``pre_execute`` and
  ``post_execute_in_worker`` signals), so a cluster whose workers are all in long tasks is
  told apart from one that is wedged.

``worker_liveness()`` reads it (``/healthz``, the runner): ``running`` (the last heartbeat
ran within ``WORKER_STALE_SECONDS``), ``starting``, ``busy`` (a heartbeat has waited longer
than that, but a worker is in a task), ``stuck`` (it has waited that long and no worker is
busy: the runner restarts the cluster) or ``down`` (no cluster reports its stats).

Everything lives in the cache named by ``WORKER_CACHE``: Redis with ``REDIS_URL``, else a
file cache that web, worker and runner on this machine share.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.dispatch import receiver
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.conf import Conf
from django_q.signals import post_execute, post_execute_in_worker, pre_execute
from django_q.signing import SignedPackage
from django_q.status import Stat

HEARTBEAT_FUNC = "tradingportal.worker.worker_heartbeat"
HEARTBEAT_NAME = "worker heartbeat"
QUEUED_KEY = "worker:heartbeat:queued"
RAN_KEY = "worker:heartbeat:ran"
BUSY_KEY = "worker:busy:{host}:{pid}"


def _cache() -> BaseCache:
    return caches[settings.WORKER_CACHE]


def worker_heartbeat() -> int:
    """The heartbeat task: nothing to do; reaching the monitor is the proof (see module)."""
    return os.getpid()


def worker_probe(*, broker: Broker) -> bool:
    """Queue a heartbeat unless the last one is still waiting; returns whether it queued.

    The time of the oldest heartbeat still waiting is kept, so a wedged cluster shows how
    long it has been; while it waits, one more is queued per stale period (a heartbeat lost
    with a flushed Redis does not hide a healthy cluster for long).
    """
    cache = _cache()
    now = time.time()
    queued, ran = cache.get(QUEUED_KEY), cache.get(RAN_KEY)
    waiting = queued is not None and (ran is None or ran["at"] < queued["at"])
    if waiting and now - queued["at"] < settings.WORKER_STALE_SECONDS:
        return False
    # As django_q.tasks.async_task builds it, without its log line every few seconds.
    task = {"id": uuid.uuid4().hex, "name": HEARTBEAT_NAME, "func": HEARTBEAT_FUNC, "args": (), "kwargs": {},
            "save": False, "started": timezone.now()}  # fmt: skip
    broker.enqueue(SignedPackage.dumps(task))
    if not waiting:
        cache.set(QUEUED_KEY, {"at": now}, timeout=None)
    return True


@receiver(post_execute, dispatch_uid="tradingportal.worker.heartbeat")
def _heartbeat_done(sender: Any, task: dict[str, Any], **kwargs: Any) -> None:
    # In the monitor, after the result went through: pusher, worker and monitor all work.
    if task.get("func") == HEARTBEAT_FUNC and task.get("success"):
        _cache().set(RAN_KEY, {"at": time.time(), "host": socket.gethostname(), "pid": task.get("result")},
                     timeout=None)  # fmt: skip


@receiver(pre_execute, dispatch_uid="tradingportal.worker.busy")
def _task_started(sender: Any, task: dict[str, Any], **kwargs: Any) -> None:
    key = BUSY_KEY.format(host=socket.gethostname(), pid=os.getpid())
    _cache().set(key, {"since": time.time(), "task": task.get("name")}, timeout=(Conf.TIMEOUT or 3600) + 60)


@receiver(post_execute_in_worker, dispatch_uid="tradingportal.worker.idle")
def _task_finished(sender: Any, **kwargs: Any) -> None:
    _cache().delete(BUSY_KEY.format(host=socket.gethostname(), pid=os.getpid()))


def worker_liveness() -> dict[str, Any]:
    """The worker's state (see the module docstring) with what it was decided from.

    Raises when the cache (or, on the ORM broker, the stats cache) cannot be read: the
    caller reports that as "unknown", never as dead.
    """
    cache = _cache()
    now = time.time()
    stale = settings.WORKER_STALE_SECONDS
    queued, ran = cache.get(QUEUED_KEY), cache.get(RAN_KEY)
    waiting_since = queued["at"] if queued and (ran is None or ran["at"] < queued["at"]) else None
    clusters = []
    stats = Stat.get_all(broker=get_broker())
    for stat in stats:
        busy = cache.get_many([BUSY_KEY.format(host=stat.host, pid=pid) for pid in stat.workers])
        clusters.append({
            "host": stat.host,
            "pid": stat.pid,
            "sentinel": stat.sentinel,
            "workers": list(stat.workers),
            "busy": len(busy),
            "status": str(stat.status),
            "reincarnations": stat.reincarnations,
            "queued_locally": stat.task_q_size,
            "uptime": round((timezone.now() - stat.tob).total_seconds(), 1),
        })  # fmt: skip
    waiting_for = 0.0
    if waiting_since is not None and stats:
        # A cluster is blamed only for the time it has existed (a restarted one gets its chance).
        oldest_start = min(stat.tob for stat in stats).timestamp()
        waiting_for = max(0.0, now - max(waiting_since, oldest_start))
    if not clusters:
        state = "down"
    elif waiting_for > stale:
        state = "busy" if any(c["busy"] for c in clusters) else "stuck"
    elif ran is None or (waiting_since is not None and now - ran["at"] > stale):
        state = "starting"  # no heartbeat yet from the clusters there are now; within their grace
    else:
        state = "running"
    return {
        "ok": state in ("running", "starting"),
        "state": state,
        "heartbeat_age": round(now - ran["at"], 1) if ran else None,
        "heartbeat_waiting": round(waiting_for, 1),
        "stale_after": stale,
        "clusters": clusters,
    }
