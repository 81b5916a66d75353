"""The dashboard's Kite pill in a real Chromium: a rollover turns it to "Kite login needed"
with the link, a new login back to valid, without a reload (session.js polls /kite/status/).
Playwright's clock moves the browser's timers on instead of waiting for them."""

import re
import threading

import pytest

from kitesession.store import session_save, token_refused
from tests.e2e.test_browser import CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def in_thread(func, **kwargs) -> None:
    """The ORM off the thread where Playwright's event loop runs (Django refuses it there)."""
    worker = threading.Thread(target=func, kwargs=kwargs)
    worker.start()
    worker.join(timeout=30)


def test_the_pill_follows_a_rollover_and_a_new_login_without_a_reload(live_server, kite_settings, chromium,
                                                                       django_user_model):  # fmt: skip
    from playwright.sync_api import expect, sync_playwright

    django_user_model.objects.create_superuser(username="op", password="op-pass-12345")
    session_save(access_token="first-token-123", user_id="AB1234", actor="op")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.clock.install()
            page.goto(f"{live_server.url}/admin/login/?next=/")
            page.fill("#id_username", "op")
            page.fill("#id_password", "op-pass-12345")
            page.click("input[type=submit]")
            pill, link = page.locator("#kite-session"), page.locator("#kite-login")
            expect(pill).to_have_text(re.compile(r"^Kite: AB1234 until \d\d \w{3} 06:00 IST$"))
            expect(link).to_be_hidden()

            in_thread(token_refused, token="first-token-123", detail="TokenException", source="ticker",
                      alert=False)  # fmt: skip
            page.clock.run_for(16_000)
            expect(pill).to_have_text("Kite login needed", timeout=20_000)
            expect(pill).to_have_class("pill pill-bad")
            expect(link).to_be_visible()
            assert link.get_attribute("href") == "/kite/login/"

            in_thread(session_save, access_token="second-token-456", user_id="AB1234", actor="op")
            page.clock.run_for(16_000)
            expect(pill).to_have_class("pill pill-ok", timeout=20_000)
            expect(pill).to_have_text(re.compile(r"^Kite: AB1234 until \d\d \w{3} 06:00 IST$"))
            expect(link).to_be_hidden()
            assert "second-token-456" not in page.content()
        finally:
            browser.close()
