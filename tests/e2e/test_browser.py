"""The dashboard in a real Chromium: log in, watch a price cell change."""

import os
import shutil

import pytest

from tests.helpers import free_port, port_open, portal_env, running, uvicorn_argv, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
]  # fmt: skip


@pytest.mark.skipif(not CHROMIUM, reason="needs Chromium: apt-get install chromium (.ci/run does)")
def test_log_in_and_see_prices_move(desk, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    env = portal_env(redis=False, INGESTION_IN_PROCESS="1", INGESTION_SIMULATE="1")
    with running(uvicorn_argv(port), env, tmp_path / "web.log"), sync_playwright() as playwright:
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            assert "/accounts/login/" in page.url  # anonymous users are sent to log in
            page.fill("#id_username", "desk")
            page.fill("#id_password", "desk-pass-123")
            page.click("button[type=submit]")
            page.wait_for_url(f"http://127.0.0.1:{port}/")
            expect(page.locator("#ws-state")).to_have_text("live", timeout=15000)
            price = page.locator("#row-738561 [data-field=last_price]")
            expect(price).not_to_have_text("–", timeout=15000)
            first = price.text_content()
            expect(price).not_to_have_text(first, timeout=20000)  # the cell updates in place
            expect(page.locator("#feed-state")).to_contain_text("connected", timeout=10000)
            page.fill("#filter", "nifty")
            expect(page.locator("#row-738561")).to_be_hidden()
            expect(page.locator("#row-256265")).to_be_visible()
        finally:
            browser.close()
