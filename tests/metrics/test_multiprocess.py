"""prometheus-client's multiprocess mode as the portal uses it: two real processes count
into one directory and a scrape adds them up; a process that has ended keeps its counts
(counters never go back) but not its open sockets."""

import struct

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import child_env, run_python
from tradingportal.metrics.collectors import Scrape

pytestmark = pytest.mark.django_db

COUNT = """
import django
django.setup()
from tradingportal import metrics
metrics.ticks_received({ticks})
metrics.ticks_published([[1, 2, 3]] * {batches} + [[4]], [None] * {batches} + [TimeoutError()])
metrics.WEBSOCKET_CLIENTS.inc({sockets})
"""


def scraped(directory) -> dict:
    text = generate_latest(Scrape(multiprocess_dir=str(directory))).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text)
            for s in f.samples}  # fmt: skip


def test_two_processes_add_up(tmp_path):
    directory = tmp_path / "prometheus"  # not there yet: the first process creates it
    env = child_env(PROMETHEUS_MULTIPROC_DIR=str(directory))
    for ticks, batches, sockets in ((100, 2, 1), (250, 3, 2)):
        result = run_python(COUNT.format(ticks=ticks, batches=batches, sockets=sockets), env)
        assert result.returncode == 0, result.stderr
    assert len(list(directory.glob("counter_*.db"))) == 2  # one file per process
    figures = scraped(directory)
    assert figures[("portal_ticks_received_total", ())] == 350
    assert figures[("portal_ticks_published_total", ())] == 15  # 5 batches of 3 sent
    assert figures[("portal_channel_layer_batches_total", (("outcome", "sent"),))] == 5
    assert figures[("portal_channel_layer_batches_total", (("outcome", "dropped"),))] == 2
    # Both processes have ended: their sockets are gone with them, and their files too.
    assert figures.get(("portal_websocket_clients", ()), 0) == 0
    assert not list(directory.glob("gauge_live*"))


def test_a_damaged_file_leaves_out_the_process_figures_not_the_scrape(tmp_path):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    # An entry whose key is not prometheus-client's JSON (a disk that filled up mid-write).
    entry = struct.pack("i", 4) + b"nope" + struct.pack("dd", 1.0, 0.0)
    (directory / "counter_12345.db").write_bytes(struct.pack("ii", 8 + len(entry), 0) + entry + bytes(64))
    figures = scraped(directory)
    assert figures[("portal_metrics_family_failed", (("family", "processes"),))] == 1
    assert figures[("portal_metrics_family_failed", (("family", "orders"),))] == 0
    assert ("portal_kill_switch_engaged", ()) in figures
