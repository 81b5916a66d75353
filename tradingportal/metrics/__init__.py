"""Prometheus metrics: what each process counts as it happens, served at ``/metrics``.

Counters and gauges here are incremented in the process that sees the event (the
ingestion counts ticks, a web worker its open sockets). With ``PROMETHEUS_MULTIPROC_DIR``
set (the runner creates a fresh one and gives it to every child) each process writes its
values to its own files there and ``/metrics``, in any web worker, adds them up
(prometheus-client's multiprocess mode); without it, a process serves its own values
only (and its process figures: memory, CPU, open files).

Figures that live in the database or in the feed's heartbeat (orders, risk rejections,
the kill switch, reconciliation, syncs, the Kite session, subscriptions and connections)
are read when Prometheus scrapes (``collectors.py``), so they are right whichever
process changed them. ``views.py`` decides who may scrape.

Label values are names people chose or fixed vocabularies (strategy names, rules,
statuses): never a token, key or user id.
"""

from __future__ import annotations

import os
from collections.abc import Sequence, Sized

# prometheus-client opens its files in this directory as soon as a metric is defined
# (below): a directory named but not there yet (a process started by hand) is created.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if MULTIPROCESS_DIR:
    os.makedirs(MULTIPROCESS_DIR, exist_ok=True)

# Imported after the directory exists.
from prometheus_client import Counter, Gauge, disable_created_metrics, values  # noqa: E402

if not getattr(values.ValueClass, "_multiprocess", False):
    # prometheus-client was imported before the variable was set (it decides once): this
    # process counts in memory, so it serves its own figures rather than the directory's.
    MULTIPROCESS_DIR = ""

# The same series with and without PROMETHEUS_MULTIPROC_DIR (which has no *_created samples).
disable_created_metrics()

# --- the feed (ingestion process) --------------------------------------------------------
TICKS_RECEIVED = Counter("portal_ticks_received", "Ticks received from the feed, every connection.")
TICKS_PUBLISHED = Counter(
    "portal_ticks_published",
    "Ticks published to the dashboards (the latest of each instrument per publish interval).",
)
CHANNEL_LAYER_BATCHES = Counter(
    "portal_channel_layer_batches",
    "ticks.batch messages handed to the channel layer, by outcome: sent, or dropped (refused or timed "
    "out; their ticks go with the next batch unless a newer tick replaced them).",
    ["outcome"],
)
for _outcome in ("sent", "dropped"):
    CHANNEL_LAYER_BATCHES.labels(_outcome)  # both series exist from the start (rates of 0)

# --- the dashboards (web processes) -------------------------------------------------------
# livesum: the open sockets of the web workers alive now (a dead worker's are dropped).
WEBSOCKET_CLIENTS = Gauge(
    "portal_websocket_clients",
    "Open /ws/ticks/ dashboard sockets, all web workers.",
    multiprocess_mode="livesum",
)


def ticks_received(count: int) -> None:
    TICKS_RECEIVED.inc(count)


def ticks_published(batches: Sequence[Sized], results: Sequence[object]) -> None:
    """One flush of the publisher: each batch of ticks with its outcome (an exception: dropped)."""
    sent = dropped = ticks = 0
    for batch, result in zip(batches, results, strict=True):
        if isinstance(result, BaseException):
            dropped += 1
        else:
            sent += 1
            ticks += len(batch)
    if sent:
        CHANNEL_LAYER_BATCHES.labels("sent").inc(sent)
        TICKS_PUBLISHED.inc(ticks)
    if dropped:
        CHANNEL_LAYER_BATCHES.labels("dropped").inc(dropped)
