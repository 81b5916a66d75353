"""``/metrics`` from real processes: the runner's children adding up their figures in one
multiprocess directory, counters moving while the simulator's ticks flow, two web
processes summing their sockets (and forgetting a killed one's), a process alone."""

import asyncio
import os
import signal
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.conftest import requires_postgres, requires_redis
from tests.factories import InstrumentFactory
from tests.helpers import free_port, login_cookie, port_open, portal_env, running, uvicorn_argv, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """/metrics parsed: {family: {labels as sorted pairs: value}} (counters under their
    family name, without ``_total``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    parsed: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (family.name, f"{family.name}_total"):
                parsed.setdefault(family.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return parsed


def figure(port: int, family: str, **labels: str) -> float:
    return scrape(port)[family][tuple(sorted(labels.items()))]


@pytest.fixture
def desk(django_user_model, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    django_user_model.objects.create_user(username="desk", password="desk-pass-123", is_staff=True)
    InstrumentFactory(
        instrument_token=256265,
        tradingsymbol="NIFTY 50",
        segment="INDICES",
        is_active=True,
        stream_mode="full",
        last_price="24350.50",
        lot_size=0,
        tick_size="0",
    )
    InstrumentFactory(
        instrument_token=738561,
        tradingsymbol="RELIANCE",
        is_active=True,
        stream_mode="full",
        last_price="2400.55",
    )


def counters_move(port: int) -> None:
    """Ticks received and published, and batches sent, all grow between two scrapes."""
    names = ("portal_ticks_received", "portal_ticks_published")
    first = wait_for(
        lambda: (f := scrape(port)) and all(f[n][()] > 0 for n in names) and f,
        timeout=60,
        what="ticks to be counted",
    )
    wait_for(
        lambda: all(figure(port, n) > first[n][()] for n in names), timeout=30, what="the counters to grow"
    )
    sent = (("outcome", "sent"),)
    wait_for(
        lambda: (
            scrape(port)["portal_channel_layer_batches"][sent] > first["portal_channel_layer_batches"][sent]
        ),
        timeout=30,
        what="batches to be sent",
    )


@requires_redis
@requires_postgres
def test_the_runner_gives_every_child_one_directory_and_web_serves_the_ingestions_counters(tmp_path, desk):
    from tests.e2e.test_runner import portal, runner_env

    port = free_port()
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_999999999.db").write_bytes(b"left by the last run")
    env = runner_env(tmp_path, redis=True, port=port, PROMETHEUS_MULTIPROC_DIR=str(directory))
    with portal(tmp_path, env) as started:
        assert not (directory / "counter_999999999.db").exists()  # a fresh start: counters from 0
        children = started.children()
        assert {"web", "ingestion", "worker"} <= set(children)
        counters_move(port)  # counted by the ingestion process, served by the web process
        assert figure(port, "portal_feed_up") == 1
        assert figure(port, "portal_feed_subscribed_instruments") == 2
        assert figure(port, "portal_feed_connections", state="connected") == 1
        pids = {int(file.stem.rsplit("_", 1)[1]) for file in directory.glob("*.db")}
        assert children["ingestion"].pid in pids
        web_pids = {children["web"].pid, *(p.pid for p in children["web"].children(recursive=True))}
        assert pids & web_pids


def test_a_web_process_alone_serves_its_own_figures(tmp_path, desk):
    """No PROMETHEUS_MULTIPROC_DIR, the feed in the web process (the embedded defaults)."""
    port = free_port()
    env = portal_env(redis=False, INGESTION_IN_PROCESS="1", INGESTION_SIMULATE="1")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with running(uvicorn_argv(port), env, tmp_path / "web.log"):
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        counters_move(port)
        figures = scrape(port)
        assert "process_resident_memory_bytes" in figures  # this process's own figures
        assert figures["portal_feed_state"][(("feed", "simulator"), ("state", "connected"))] == 1


def sockets_open(port: int, cookie: str, opened: asyncio.Event, close: asyncio.Event):
    async def run():
        async with connect(
            f"ws://127.0.0.1:{port}/ws/ticks/",
            additional_headers={"Cookie": cookie},
            origin=f"http://127.0.0.1:{port}",
            open_timeout=10,
        ):
            opened.set()
            await close.wait()

    return run()


def test_two_web_processes_add_up_their_sockets_and_a_killed_ones_are_dropped(tmp_path: Path, desk):
    directory = tmp_path / "prometheus"
    ports = free_port(), free_port()
    env = portal_env(redis=False, PROMETHEUS_MULTIPROC_DIR=str(directory))
    with (
        running(uvicorn_argv(ports[0]), env, tmp_path / "web1.log"),
        running(uvicorn_argv(ports[1]), env, tmp_path / "web2.log") as second,
    ):
        wait_for(lambda: all(port_open(p) for p in ports), timeout=30, what="both web processes")
        cookie = login_cookie(ports[0], "desk", "desk-pass-123")  # sessions are in the database

        async def run():
            close = asyncio.Event()
            opened = [asyncio.Event(), asyncio.Event(), asyncio.Event()]
            tasks = [
                asyncio.create_task(sockets_open(port, cookie, event, close))
                for port, event in zip((ports[0], ports[1], ports[1]), opened, strict=True)
            ]
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 30)
            for port in ports:  # either process answers with the sum
                await asyncio.to_thread(
                    wait_for, lambda p=port: figure(p, "portal_websocket_clients") == 3, what="3 open sockets"
                )
            os.killpg(second.pid, signal.SIGKILL)  # no chance to count its sockets down
            second.wait()
            await asyncio.to_thread(
                wait_for,
                lambda: figure(ports[0], "portal_websocket_clients") == 1,
                what="the killed one's dropped",
            )
            close.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(
                wait_for,
                lambda: figure(ports[0], "portal_websocket_clients") == 0,
                what="the last socket closed",
            )

        asyncio.run(run())
