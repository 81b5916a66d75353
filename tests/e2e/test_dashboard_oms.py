"""The dashboard's orders/positions panel in a real Chromium, against the real portal on the
paper broker and the simulator: orders placed over the API fill, the position appears, its
P&L moves with the streamed ticks (exactly: BigInt arithmetic, checked against Decimal),
the kill switch shows who engaged it and why, and a panel that cannot refresh says so
instead of showing old data as current."""

import contextlib
import json
import random
import re
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

import pytest

from tests.conftest import requires_redis
from tests.e2e.test_browser import RELIANCE, launch_browser, open_dashboard
from tests.helpers import BASE_DIR, free_port, port_open, portal_env, running, uvicorn_argv, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]
MONEY_JS = BASE_DIR / "ingestion" / "static" / "ingestion" / "money.js"
CENT = Decimal("0.01")
TICK = Decimal("0.05")  # RELIANCE's tick size (the desk fixture's)


@pytest.fixture
def browser(chromium):
    with launch_browser(chromium) as browser:
        yield browser


def in_thread(fn):
    """Run ``fn`` (ORM work) in a thread of its own: Playwright's sync API runs an event loop
    in this one, where Django refuses database calls."""
    from django.db import connection

    def run():
        try:
            return fn()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def api_token(username: str) -> str:
    """A DRF token for ``username``, who may place orders and operate the kill switch."""

    def create():
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Permission
        from rest_framework.authtoken.models import Token

        user = get_user_model().objects.get(username=username)
        user.user_permissions.add(
            *Permission.objects.filter(codename__in=["place_order", "operate_kill_switch"])
        )
        return Token.objects.create(user=user).key

    return in_thread(create)


def call(port: int, token: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, data=json.dumps(body).encode() if body else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def place(port: int, token: str, **fields) -> dict:
    order = {
        "exchange": "NSE",
        "tradingsymbol": "RELIANCE",
        "product": "MIS",
        "order_type": "MARKET",
        **fields,
    }
    status, body = call(port, token, "POST", "/api/orders/", order)
    assert status == 201, (status, body)
    return body


def price_text(value: Decimal) -> str:
    """A price as the panel shows it: every significant decimal, at least 2 ("2401.00", "2400.4525")."""
    whole, _, fraction = f"{value:f}".partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def money(text: str) -> Decimal:
    """A P&L figure as the panel shows it ("-1,234.50")."""
    return Decimal(text.replace(",", ""))


# --- the arithmetic, in the browser's own JavaScript engine ---------------------------------


def expected_unrealised(position: dict, last_price: str) -> Decimal:
    """What the panel must show: the server's mark moved by (LTP - its last_price) x quantity,
    i.e. (LTP - average price) x quantity on the exact open cost."""
    quantity = position["quantity"]
    if position.get("last_price") is not None:
        value = (
            Decimal(position["unrealised"])
            + (Decimal(last_price) - Decimal(position["last_price"])) * quantity
        )
    else:
        value = (Decimal(last_price) - Decimal(position["average_price"])) * quantity
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def float_unrealised(position: dict, last_price: str) -> float:
    """The same formula in floats, as a careless panel would compute it."""
    if position.get("last_price") is not None:
        moved = (float(last_price) - float(position["last_price"])) * position["quantity"]
        return float(position["unrealised"]) + moved
    return (float(last_price) - float(position["average_price"])) * position["quantity"]


def indian(value: Decimal) -> str:
    """Python's own rendering of an amount grouped the Indian way, for comparison."""
    sign, digits = ("-" if value < 0 else ""), f"{abs(value):.2f}"
    whole, fraction = digits.split(".")
    head, tail = whole[:-3], whole[-3:]
    groups = []
    while len(head) > 2:
        groups.insert(0, head[-2:])
        head = head[:-2]
    if head:
        groups.insert(0, head)
    return sign + ",".join([*groups, tail]) + "." + fraction


def test_money_arithmetic_is_exact_where_floats_are_not(browser):
    page = browser.new_page()
    page.goto("about:blank")
    page.add_script_tag(path=str(MONEY_JS))
    rng = random.Random(20240610)
    cases = [
        # Large quantities at 4-place prices: a float loses the paise here.
        (
            {"quantity": 9_999_999, "average_price": "2400.0567", "last_price": None, "unrealised": "0"},
            "2400.0533",
        ),
        (
            {
                "quantity": -7_500_000,
                "average_price": "18234.1234",
                "last_price": "18234.1200",
                "unrealised": "25500.0000",
            },
            "18190.05",
        ),
        # Half to even at the cent, both signs; zero and exponent forms from str(Decimal).
        ({"quantity": 1, "average_price": "100.0000", "last_price": None, "unrealised": "0E-8"}, "100.005"),
        ({"quantity": 1, "average_price": "100.0000", "last_price": None, "unrealised": "0"}, "100.015"),
        ({"quantity": -1, "average_price": "100.0000", "last_price": None, "unrealised": "0"}, "100.005"),
        ({"quantity": 3, "average_price": "0.0000", "last_price": "5E-7", "unrealised": "1.5E-6"}, "5E-7"),
        ({"quantity": 0, "average_price": "0", "last_price": None, "unrealised": "0"}, "2400.55"),
    ]
    for _ in range(300):
        average = Decimal(rng.randrange(1, 10**8)) / 10**4
        marked = (average * Decimal(rng.uniform(0.9, 1.1))).quantize(Decimal("0.0001"), rounding=ROUND_DOWN)
        quantity = rng.choice([1, -1]) * rng.randrange(1, 10**7)
        # The server's unrealised at its mark, as it stores it (4 places, exact open cost behind it).
        open_cost = average * quantity + Decimal(rng.randrange(-50, 50)) / 10**8
        unrealised = (marked * quantity - open_cost).quantize(Decimal("0.0001"))
        last = str((marked * Decimal(rng.uniform(0.95, 1.05))).quantize(CENT, rounding=ROUND_DOWN))
        cases.append(({"quantity": quantity, "average_price": str(average), "last_price": str(marked),
                       "unrealised": str(unrealised)}, last))  # fmt: skip
    shown = page.evaluate(
        """(cases) => cases.map(([p, last]) => {
            const M = window.PortalMoney;
            return M.format(M.unrealised(p, M.parse(last)));
        })""",
        cases,
    )
    expected = [indian(expected_unrealised(p, last)) for p, last in cases]
    assert shown == expected
    # The cases have teeth: the same formula in floats gets some of them wrong.
    floats = [f"{float_unrealised(p, last):.2f}" for p, last in cases]
    assert sum(f != e.replace(",", "") for f, e in zip(floats, expected, strict=True)) > 0

    # Parsing and price display: every decimal form the server sends, nothing else.
    parsed = page.evaluate(
        """(texts) => texts.map((t) => {
            const v = window.PortalMoney.parse(t);
            return v === null ? null : window.PortalMoney.formatPrice(v);
        })""",
        ["2400.5500", "0E-8", "-0.0500", "5E-7", "1E+3", ".5", "12", "abc", "", "1.2.3", "NaN", "1e999", "-"],
    )
    assert parsed == ["2400.55", "0.00", "-0.05", "0.0000005", "1000.00", "0.50", "12.00", None, None, None, None,
                      None, None]  # fmt: skip
    assert (
        page.evaluate("window.PortalMoney.format(window.PortalMoney.parse('-123456789.125'))")
        == "-12,34,56,789.12"
    )


# --- the panel against the real portal ----------------------------------------------------------


def strategy_create(name: str) -> None:
    from oms.models import Strategy

    in_thread(lambda: Strategy.objects.create(name=name, capital=Decimal("1000000")))


def panel_row(page, token: int) -> dict:
    """One position row's cells, read in one go (a tick updates them in one task)."""
    return page.evaluate(
        """(token) => {
            const row = document.querySelector(`#positions tr[data-token="${token}"]`);
            if (!row) return null;
            const out = {mark: row.dataset.mark};
            for (const cell of row.cells) out[cell.dataset.field] = cell.textContent;
            out.ltp_title = row.querySelector('[data-field=last_price]').title;
            return out;
        }""",
        token,
    )


@contextlib.contextmanager
def portal(arrangement, port, tmp_path):
    """As test_browser.portal, yielding the web process (to stop it): the feed in the web
    process, or a separate ``run_ingestion --simulate`` reaching it through Redis."""
    with contextlib.ExitStack() as stack:
        if arrangement == "in-process":
            env = portal_env(redis=False, INGESTION_IN_PROCESS="1", INGESTION_SIMULATE="1")
        else:
            env = portal_env(redis=True)
            ingestion = [sys.executable, "manage.py", "run_ingestion", "--simulate"]
            stack.enter_context(running(ingestion, env, tmp_path / "ingestion.log"))
        web = stack.enter_context(running(uvicorn_argv(port), env, tmp_path / "web.log"))
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        yield web


@pytest.mark.parametrize("arrangement", ["in-process", pytest.param("redis", marks=requires_redis)])
def test_positions_follow_fills_and_ticks_and_the_kill_switch_shows(desk, tmp_path, browser, arrangement):
    from playwright.sync_api import expect

    port = free_port()
    token = api_token("desk")
    strategy_create("momentum")
    with portal(arrangement, port, tmp_path) as web:
        api_requests: list[str] = []
        page = open_dashboard(
            browser, port, on_request=lambda r: "/api/" in r.url and api_requests.append(r.url)
        )
        expect(page.locator("#kill-switch")).to_have_attribute("data-state", "ACTIVE", timeout=15000)
        expect(page.locator("#ks-headline")).to_have_text("Trading active")
        expect(page.locator("#positions tbody")).to_have_text("No positions today.")
        expect(page.locator("#orders tbody")).to_have_text("No open orders.")
        expect(page.locator(f"#row-{RELIANCE} [data-field=last_price]")).not_to_have_text("–", timeout=15000)

        # A MARKET buy fills on the paper broker: the position appears on the next poll.
        bought = place(port, token, transaction_type="BUY", quantity=10)
        assert bought["status"] == "COMPLETE", bought
        average = Decimal(bought["average_price"])
        position = page.locator(f'#positions tr[data-token="{RELIANCE}"]')
        expect(position.locator("[data-field=quantity]")).to_have_text("10", timeout=10000)
        expect(position.locator("[data-field=average_price]")).to_have_text(price_text(average))
        expect(position.locator("[data-field=strategy]")).to_have_text("manual")

        # Its LTP and unrealised P&L move with the ticks, exactly (LTP - average) x 10.
        first = panel_row(page, RELIANCE)
        assert first["mark"] == "live" and first["ltp_title"].startswith("live tick")
        expect(position.locator("[data-field=unrealised]")).not_to_have_text(
            first["unrealised"], timeout=20000
        )
        for _ in range(3):
            row = panel_row(page, RELIANCE)
            assert money(row["unrealised"]) == ((Decimal(row["last_price"]) - average) * 10).quantize(CENT)
            assert money(row["pnl"]) == money(row["unrealised"]) + money(row["realised"])
            expect(position.locator("[data-field=last_price]")).not_to_have_text(
                row["last_price"], timeout=20000
            )
        # The day's figures add up to the rows (one open position, nothing realised yet).
        totals = page.evaluate(
            """() => [...document.querySelectorAll('#pnl-unrealised, #positions [data-field=unrealised]')]
                .map((e) => e.textContent)"""
        )
        assert totals[0] == totals[1], totals
        expect(page.locator("#pnl-realised")).to_have_text("0.00")

        # A resting LIMIT order in another strategy: listed as open, with its age; P&L per strategy.
        ltp = Decimal(panel_row(page, RELIANCE)["last_price"])
        limit = (ltp * Decimal("0.95") / TICK).to_integral_value(rounding=ROUND_DOWN) * TICK
        resting = place(port, token, transaction_type="BUY", quantity=5, order_type="LIMIT", price=str(limit),
                        strategy="momentum")  # fmt: skip
        assert resting["status"] == "OPEN", resting
        order = page.locator(f'#orders tr[data-id="{resting["id"]}"]')
        expect(order.locator("[data-field=status]")).to_have_text("OPEN", timeout=10000)
        expect(order.locator("[data-field=price]")).to_have_text(price_text(limit))
        expect(order.locator("[data-field=side]")).to_have_text("BUY")
        expect(order.locator("[data-field=filled]")).to_have_text("0")
        expect(order.locator("[data-field=strategy]")).to_have_text("momentum")
        expect(order.locator("[data-field=age]")).to_have_text(re.compile(r"^\d+s$"))
        age = order.locator("[data-field=age]").text_content()
        expect(order.locator("[data-field=age]")).not_to_have_text(age, timeout=10000)  # it ages
        strategies = page.locator("#pnl-strategies")
        expect(strategies).to_be_visible()
        expect(strategies.locator("tbody tr")).to_have_count(2)
        expect(strategies.locator('tr[data-strategy="momentum"] [data-field=orders]')).to_have_text("1")
        assert not page.locator("#orders input, #orders button, #positions input, #positions button").count()
        page.screenshot(path=tmp_path / "open-position.png", full_page=True)

        # Selling it all: the position goes flat with the realised P&L the API reports.
        sold = place(port, token, transaction_type="SELL", quantity=10)
        assert sold["status"] == "COMPLETE", sold
        expect(position.locator("[data-field=quantity]")).to_have_text("0", timeout=10000)
        expect(position).to_have_class(re.compile(r"\bflat\b"))
        _, positions = call(port, token, "GET", "/api/positions/")
        realised = Decimal(next(p for p in positions if p["instrument_token"] == RELIANCE)["realised"])
        assert realised == (Decimal(sold["average_price"]) - average) * 10
        expect(position.locator("[data-field=realised]")).to_have_text(indian(realised.quantize(CENT)))
        _, pnl = call(port, token, "GET", "/api/pnl/")
        expect(page.locator("#pnl-realised")).to_have_text(indian(Decimal(pnl["realised"]).quantize(CENT)))
        expect(page.locator("#pnl-unrealised")).to_have_text("0.00")
        page.screenshot(path=tmp_path / "oms-panel.png", full_page=True)

        # The kill switch, engaged over the API: prominent, with who and why, and the admin's page.
        status, _ = call(port, token, "POST", "/api/kill-switch/",
                         {"engaged": True, "reason": "desk drill: stop everything"})  # fmt: skip
        assert status == 200
        box = page.locator("#kill-switch")
        expect(box).to_have_attribute("data-state", "HALTED", timeout=10000)
        expect(box).to_have_class(re.compile(r"\bks-halted\b"))
        expect(page.locator("#ks-headline")).to_contain_text("KILL SWITCH ENGAGED")
        expect(page.locator("#ks-detail")).to_contain_text("by desk")
        expect(page.locator("#ks-detail")).to_contain_text("desk drill: stop everything")
        expect(page.locator("#ks-admin")).to_have_attribute("href", "/admin/oms/killswitchevent/")
        page.screenshot(path=tmp_path / "kill-switch.png", full_page=False)
        status, _ = call(port, token, "POST", "/api/kill-switch/", {"engaged": True, "mode": "reducing",
                                                                     "reason": "flatten only"})  # fmt: skip
        expect(box).to_have_attribute("data-state", "REDUCING", timeout=10000)
        expect(page.locator("#ks-headline")).to_contain_text("reducing only")
        call(port, token, "POST", "/api/kill-switch/", {"engaged": False})
        expect(box).to_have_attribute("data-state", "ACTIVE", timeout=10000)
        expect(page.locator("#ks-detail")).to_contain_text("released by desk")
        # One strategy's own switch: the desk trades, the banner names the stopped strategy.
        status, _ = call(port, token, "POST", "/api/kill-switch/",
                         {"engaged": True, "strategy": "momentum", "reason": "momentum misbehaves"})  # fmt: skip
        assert status == 200
        expect(box).to_have_class(re.compile(r"\bks-partial\b"), timeout=10000)
        expect(page.locator("#ks-headline")).to_have_text("Trading active for the desk; 1 strategy stopped")
        expect(page.locator("#ks-strategies li")).to_have_text(
            re.compile(r"^momentum: halted by desk at .*: momentum misbehaves$")
        )
        call(port, token, "POST", "/api/kill-switch/", {"engaged": False, "strategy": "momentum"})
        expect(page.locator("#ks-headline")).to_have_text("Trading active", timeout=10000)
        expect(page.locator("#ks-strategies")).to_be_hidden()

        # One tab stays far below the per-user throttle (1200/min): 4 requests a round, every 2 s.
        minutes = page.evaluate("performance.now()") / 60000
        assert minutes > 0.2 and len(api_requests) / minutes < 200, (len(api_requests), minutes)

        # The portal goes away: the panel says it cannot refresh, and stops claiming the switch is released.
        web.terminate()
        web.wait(timeout=15)
        expect(page.locator("#oms-refresh")).to_have_attribute("data-state", "error", timeout=15000)
        expect(page.locator("#oms-refresh")).to_contain_text("cannot be reached")
        expect(box).to_have_attribute("data-state", "unknown", timeout=30000)
        expect(page.locator("#ks-headline")).to_have_text("Kill switch state unknown")
        expect(page.locator("#feed-state")).to_contain_text("unknown")  # nor that the feed is connected
        page.screenshot(path=tmp_path / "unreachable.png", full_page=False)


def test_a_trader_without_staff_rights_sees_no_admin_link(desk, tmp_path, browser, django_user_model):
    from playwright.sync_api import expect

    in_thread(lambda: django_user_model.objects.filter(username="desk").update(is_staff=False))
    port = free_port()
    with portal("in-process", port, tmp_path):
        page = open_dashboard(browser, port)
        expect(page.locator("#kill-switch")).to_have_attribute("data-state", "ACTIVE", timeout=15000)
        assert page.locator("#ks-admin").count() == 0
