"""Content-Security-Policy (django-csp): on every page, and nothing the portal serves
breaks under it in a real Chromium."""

import pytest

from tests.factories import InstrumentFactory
from tests.helpers import CHROMIUM_ARGS, free_port, port_open, portal_env, running, uvicorn_argv, wait_for

PAGES = ["/", "/accounts/login/", "/admin/", "/admin/instruments/instrument/", "/api/docs/"]


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in header.split(";")) if d}


@pytest.mark.django_db
@pytest.mark.parametrize("page", PAGES)
def test_every_page_carries_the_policy(client, staff_user, page):
    if page != "/accounts/login/":
        client.force_login(staff_user)
    response = client.get(page)
    assert response.status_code == 200
    directives = policy(response)
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["connect-src"] == ["'self'", "ws://testserver"]


@pytest.mark.django_db
def test_the_websocket_source_follows_the_host_and_scheme(client, staff_user, settings):
    settings.ALLOWED_HOSTS = ["desk.example.com"]
    client.force_login(staff_user)
    response = client.get("/", HTTP_HOST="desk.example.com", secure=True)
    assert policy(response)["connect-src"] == ["'self'", "wss://desk.example.com"]


@pytest.mark.django_db
def test_api_answers_carry_it_too(trader_client):
    assert "frame-ancestors 'none'" in trader_client.get("/api/instruments/")["Content-Security-Policy"]


VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`);
});
"""
PASSWORD = "csp-pass-8841"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_admin_login_dashboard_and_docs_work_under_the_policy_in_chromium(
    chromium, django_user_model, settings, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]  # the product's
    django_user_model.objects.create_superuser(username="cspdesk", email="", password=PASSWORD)
    reliance = InstrumentFactory(instrument_token=738561, tradingsymbol="RELIANCE", is_active=True,
                                 stream_mode="full", last_price="2400.55")  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = portal_env(redis=False, INGESTION_IN_PROCESS="1", INGESTION_SIMULATE="1")
    problems: list[str] = []
    with running(uvicorn_argv(port), env, tmp_path / "web.log"), sync_playwright() as playwright:
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.add_init_script(VIOLATIONS)
            page.on(
                "console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None
            )

            def violations() -> list[str]:
                return page.evaluate("window.__csp || []")

            page.goto(f"{base}/accounts/login/")
            problems += violations()
            page.fill("#id_username", "cspdesk")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            expect(page.locator("#ws-state")).to_have_text(
                "live", timeout=15000
            )  # connect-src: the websocket
            expect(
                page.locator(f"#row-{reliance.instrument_token} [data-field=last_price]")
            ).not_to_have_text("–", timeout=15000)
            problems += violations()

            page.goto(f"{base}/admin/")
            expect(page.locator("#site-name")).to_contain_text("Kite Trading Desk")
            problems += violations()
            page.goto(f"{base}/admin/instruments/instrument/")
            expect(page.locator("#result_list")).to_be_visible()
            page.locator("#result_list tbody th a").first.click()
            expect(page.locator("#content-main form")).to_be_visible()
            problems += violations()

            page.goto(f"{base}/api/docs/")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text(
                "Kite Trading Desk API", timeout=15000
            )
            expect(page.locator(".opblock").first).to_be_visible(timeout=15000)  # the schema loaded
            problems += violations()
        finally:
            browser.close()
    assert not problems, "\n".join(problems)
