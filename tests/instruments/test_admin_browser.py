"""The admin's instrument list in a real Chromium at a laptop's width (1366 px): the
operator sees the symbol, Is active and the stream mode without scrolling."""

import pytest

from tests.factories import InstrumentFactory, NiftyOptionFactory
from tests.helpers import CHROMIUM_ARGS, port_open, portal_env, running, uvicorn_argv, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]
WIDTH, HEIGHT = 1366, 768


@pytest.fixture
def operator(django_user_model, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    return django_user_model.objects.create_user(
        username="operator", password="operator-pass-123", is_staff=True, is_superuser=True
    )


def test_is_active_of_the_first_row_is_visible_at_1366px(operator, chromium, port, tmp_path):
    from playwright.sync_api import sync_playwright

    # The widest rows a real dump has: long option symbols, fractional strikes, 9-digit tokens.
    for i in range(5):
        NiftyOptionFactory(tradingsymbol=f"MIDCPNIFTY99DEC{13000 + i * 25}CE", name="NIFTY MIDCAP SELECT INDEX",
                           instrument_token=12_345_602 + i * 256, strike=f"{13000 + i * 25}.25", lot_size=1800)  # fmt: skip
    InstrumentFactory(tradingsymbol="BAJAJ-AUTO", name="BAJAJ AUTO LIMITED - EQUITY SHARES OF RS 10 EACH",
                      exchange="BSE", segment="BSE", instrument_token=128_083_204)  # fmt: skip
    env = portal_env(redis=False, INGESTION_IN_PROCESS="0")
    with running(uvicorn_argv(port), env, tmp_path / "web.log"), sync_playwright() as playwright:
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.goto(f"http://127.0.0.1:{port}/admin/login/?next=/admin/instruments/instrument/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", "operator-pass-123")
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/instruments/instrument/")
            checkbox = page.locator('input[name="form-0-is_active"]')
            mode = page.locator('select[name="form-0-stream_mode"]')
            symbol = page.locator("#result_list tbody tr:first-child th a")
            page.screenshot(path=str(tmp_path / "instrument-list-1366.png"))
            for element in (symbol, checkbox, mode):
                box = element.bounding_box()
                assert box is not None
                assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, (element, box)
                assert box["y"] >= 0 and box["y"] + box["height"] <= HEIGHT, (element, box)
            # No column is pushed off-screen: the page and the table do not scroll sideways.
            assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
            results = page.locator("#changelist-form .results")
            assert results.evaluate("e => e.scrollWidth <= e.clientWidth"), "the table scrolls sideways"
            last = page.locator("#result_list thead th").last.bounding_box()
            assert last is not None and last["x"] + last["width"] <= WIDTH
        finally:
            browser.close()
