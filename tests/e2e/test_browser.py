"""The dashboard in a real Chromium: log in, watch prices move, and read what each row says.

The browser's clock is set (Playwright's clock) to a weekday inside NSE hours, hours
away from the real time, and the browser runs in New York's time zone: the Time column
must show the exchange's time in IST. Whether the market is open comes from the server's
market calendar (its clock, the holidays in the database), so the test that needs it
open or closed says so with a holiday row for today.
"""

import contextlib
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from instruments.models import Instrument
from tests.conftest import requires_redis
from tests.helpers import free_port, port_open, portal_env, running, uvicorn_argv, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
]  # fmt: skip
IST = ZoneInfo("Asia/Kolkata")
NIFTY_50, RELIANCE, SBIN = 256265, 738561, 779521


def set_instrument(token, **fields):
    """Update an instrument as psql would, from a thread of its own: Playwright's sync API
    runs an event loop in this one, where Django refuses database calls."""
    from django.db import connection

    def update():
        try:
            Instrument.objects.filter(instrument_token=token).update(**fields)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(update).result()


def set_market_day(day, **fields):
    """Today's row of NSE's holiday list, as the admin would write it (from a thread of its own)."""
    from django.db import connection

    from markets.models import MarketHoliday

    def update():
        try:
            MarketHoliday.objects.update_or_create(segment="NSE", day=day, defaults=fields)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(update).result()


def market_time_far_from_now() -> datetime:
    """A Monday inside NSE hours (09:15-15:30 IST) at least two hours from the real time of day."""
    now = datetime.now(tz=IST)
    hour = 14 if abs(now.hour + now.minute / 60 - 10) < 2 else 10
    return datetime(2030, 1, 7, hour, 0, tzinfo=IST)  # 7 January 2030 is a Monday


@contextlib.contextmanager
def launch_browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser(chromium):
    with launch_browser(chromium) as browser:
        yield browser


@contextlib.contextmanager
def portal(arrangement, port, tmp_path):
    """The web process and the feed: in one process (the embedded defaults), or a separate
    ``run_ingestion --simulate`` reaching the web process through Redis."""
    with contextlib.ExitStack() as stack:
        if arrangement == "in-process":
            env = portal_env(redis=False, INGESTION_IN_PROCESS="1", INGESTION_SIMULATE="1")
        else:
            env = portal_env(redis=True)
            ingestion = [sys.executable, "manage.py", "run_ingestion", "--simulate"]
            stack.enter_context(running(ingestion, env, tmp_path / "ingestion.log"))
        stack.enter_context(running(uvicorn_argv(port), env, tmp_path / "web.log"))
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        yield


def open_dashboard(browser, port, *, clock=None, on_request=None):
    from playwright.sync_api import expect

    context = browser.new_context(timezone_id="America/New_York", viewport={"width": 1366, "height": 700})
    page = context.new_page()
    if on_request is not None:
        page.on("request", on_request)
    if clock is not None:
        page.clock.install(time=clock)
    page.goto(f"http://127.0.0.1:{port}/")
    assert "/accounts/login/" in page.url  # anonymous users are sent to log in
    page.fill("#id_username", "desk")
    page.fill("#id_password", "desk-pass-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"http://127.0.0.1:{port}/")
    expect(page.locator("#ws-state")).to_have_text("live", timeout=15000)
    return page


def sparkline_extent(page, token):
    """The leftmost and rightmost drawn pixel columns of a row's sparkline, and its width."""
    return page.evaluate(
        """(token) => {
            const canvas = document.querySelector(`#row-${token} canvas.spark`);
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let left = canvas.width, right = -1;
            for (let x = 0; x < canvas.width; x++)
                for (let y = 0; y < canvas.height; y++)
                    if (data[(y * canvas.width + x) * 4 + 3] > 0) { left = Math.min(left, x); right = Math.max(right, x); }
            return [left, right, canvas.width];
        }""",
        token,
    )


def test_log_in_and_see_prices_move(desk, tmp_path, browser):
    from playwright.sync_api import expect

    port = free_port()
    with portal("in-process", port, tmp_path):
        page = open_dashboard(browser, port)
        price = page.locator(f"#row-{RELIANCE} [data-field=last_price]")
        expect(price).not_to_have_text("–", timeout=15000)
        first = price.text_content()
        expect(price).not_to_have_text(first, timeout=20000)  # the cell updates in place
        # The simulator starts from the instrument's last price, not from 100.
        assert abs(float(price.text_content()) - 2400.55) < 25
        # The sparkline spans its box from its first points.
        left, right, width = sparkline_extent(page, RELIANCE)
        assert left <= 2 and right >= width - 3, (left, right, width)
        expect(page.locator("#feed-state")).to_contain_text("connected", timeout=10000)
        page.fill("#filter", "nifty")
        expect(page.locator(f"#row-{RELIANCE}")).to_be_hidden()
        expect(page.locator(f"#row-{NIFTY_50}")).to_be_visible()


def test_time_is_the_exchange_time_in_ist_and_bid_ask_follow_full_mode(desk, tmp_path, browser):
    from playwright.sync_api import expect

    set_instrument(SBIN, is_active=True, stream_mode="quote")
    port = free_port()
    with portal("in-process", port, tmp_path):
        browser_clock = market_time_far_from_now()
        page = open_dashboard(browser, port, clock=browser_clock)
        for token in (RELIANCE, SBIN, NIFTY_50):
            expect(page.locator(f"#row-{token} [data-field=last_price]")).not_to_have_text("–", timeout=15000)
            # Streaming rows are not stale (the snapshot's old receive times are replaced by live ticks).
            expect(page.locator(f"#row-{token}")).not_to_have_class(re.compile(r"\bstale\b"), timeout=10000)

        # Full mode: the exchange's timestamp, in IST (the browser is in New York, its clock in 2030).
        time_cell = page.locator(f"#row-{RELIANCE} [data-field=time]")
        expect(time_cell).to_have_text(re.compile(r"\d\d:\d\d:\d\d$"))
        shown = time_cell.text_content()
        exchange_now = datetime.now(tz=IST)
        clock = datetime.strptime(shown[-8:], "%H:%M:%S").replace(
            year=exchange_now.year, month=exchange_now.month, day=exchange_now.day, tzinfo=exchange_now.tzinfo
        )
        assert abs(clock - exchange_now) < timedelta(seconds=30), (shown, exchange_now)
        day, _month, _time = shown.split()  # not the browser's day (2030): the date is shown too
        assert day == exchange_now.strftime("%d")
        assert abs(clock.hour - browser_clock.hour) >= 1  # not the browser's clock
        # Quote mode carries no timestamp: a dash, never the browser's clock.
        expect(page.locator(f"#row-{SBIN} [data-field=time]")).to_have_text("–")

        # Bid/Ask: shown while a visible instrument streams in full mode (RELIANCE) ...
        bid_header = page.locator("#ticks th", has_text="Bid")
        expect(bid_header).to_be_visible()
        expect(page.locator(f"#row-{RELIANCE} [data-field=bid]")).to_contain_text("×")
        expect(page.locator(f"#row-{SBIN} [data-field=bid]")).to_have_text("–")
        expect(page.locator("#depth-note")).to_be_hidden()
        page.screenshot(path=tmp_path / "dashboard.png", full_page=True)
        # ... hidden, with the reason, when none does: an index has no depth, SBIN is in quote mode.
        for term in ("nifty", "sbin"):
            page.fill("#filter", term)
            expect(bid_header).to_be_hidden()
            expect(page.locator("#depth-note")).to_be_visible()
            expect(page.locator("#depth-note")).to_contain_text("full mode")
        page.screenshot(path=tmp_path / "dashboard-no-depth.png", full_page=True)
        page.fill("#filter", "")
        expect(bid_header).to_be_visible()


@pytest.mark.parametrize("arrangement", ["in-process", pytest.param("redis", marks=requires_redis)])
def test_a_deactivated_instrument_is_greyed_out_as_not_streaming(desk, tmp_path, browser, arrangement):
    from playwright.sync_api import expect

    set_instrument(SBIN, is_active=True, stream_mode="quote")
    port = free_port()
    with portal(arrangement, port, tmp_path):
        page = open_dashboard(browser, port, clock=market_time_far_from_now())
        row = page.locator(f"#row-{SBIN}")
        price = row.locator("[data-field=last_price]")
        expect(price).not_to_have_text("–", timeout=15000)

        set_instrument(SBIN, is_active=False)  # as the admin, psql or a sync would
        expect(row).to_have_class(re.compile(r"\bnot-streaming\b"), timeout=15000)
        expect(row.locator(".badge")).to_have_text("not streaming")
        last = price.text_content()
        assert re.fullmatch(r"\d+\.\d\d", last)  # its last price stays, greyed out
        page.screenshot(path=tmp_path / "not-streaming.png", full_page=True)
        # The others keep streaming, and the greyed row neither moves nor turns stale.
        reliance = page.locator(f"#row-{RELIANCE} [data-field=last_price]")
        expect(reliance).not_to_have_text("–")
        before = reliance.text_content()
        expect(reliance).not_to_have_text(before, timeout=20000)
        assert price.text_content() == last
        expect(page.locator(f"#row-{RELIANCE}")).not_to_have_class(re.compile("not-streaming|stale"))
        expect(row).not_to_have_class(re.compile(r"\bstale\b"))


def test_rows_turn_stale_when_ticks_stop_while_the_market_trades_and_say_market_closed_otherwise(
    desk, tmp_path, browser
):
    from playwright.sync_api import expect

    # The server's calendar decides, by its clock: a special session all day today opens NSE
    # whatever the real hour (and weekday) the test runs at.
    today = datetime.now(tz=IST).date()
    set_market_day(today, description="Test session", session="special", opens_at=time(0),
                   closes_at=time(23, 59, 59))  # fmt: skip
    sim_port, port = free_port(), free_port()
    simulator_argv = [sys.executable, "manage.py", "run_simulator", "--port", str(sim_port),
                      "--api-key", "desk-key", "--access-token", "desk-token"]  # fmt: skip
    env = portal_env(redis=False, INGESTION_IN_PROCESS="1", INGESTION_SIMULATE="0", KITE_API_KEY="desk-key",
                     KITE_ACCESS_TOKEN="desk-token", KITE_TICKER_URL=f"ws://127.0.0.1:{sim_port}",
                     MARKET_CALENDAR_REFRESH_SECONDS="1")  # fmt: skip
    with running(simulator_argv, portal_env(redis=False), tmp_path / "simulator.log") as simulator:
        wait_for(lambda: port_open(sim_port), timeout=30, what="the simulator")
        with running(uvicorn_argv(port), env, tmp_path / "web.log"):
            wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
            page = open_dashboard(browser, port, clock=market_time_far_from_now())
            row = page.locator(f"#row-{RELIANCE}")
            expect(row.locator("[data-field=last_price]")).not_to_have_text("–", timeout=20000)
            expect(row).not_to_have_class(re.compile(r"\bstale\b"))
            expect(page.locator("#market-state")).to_have_text(
                re.compile(r"^market open: NSE open until 23:59")
            )

            simulator.terminate()  # the feed goes quiet
            simulator.wait(timeout=15)
            expect(row).to_have_class(re.compile(r"\bstale\b"), timeout=20000)
            expect(row.locator(".badge")).to_have_text("stale")
            page.screenshot(path=tmp_path / "stale.png", full_page=True)

            # The exchange closes for the day (a holiday entered in the admin): a quiet row is
            # no alarm now, it says why.
            set_market_day(today, description="Test holiday", session="closed", opens_at=None, closes_at=None)
            expect(row).not_to_have_class(re.compile(r"\bstale\b"), timeout=15000)
            expect(row).to_have_class(re.compile(r"\bmarket-closed\b"))
            expect(row.locator(".badge")).to_have_text("market closed")
            expect(row.locator(".badge")).to_have_attribute(
                "title", re.compile(r"^NSE closed: holiday \(Test holiday\); opens ")
            )
            expect(page.locator("#market-state")).to_have_text(
                re.compile(r"^market closed: holiday \(Test holiday\) \(NSE opens ")
            )
            page.screenshot(path=tmp_path / "market-closed.png", full_page=True)
