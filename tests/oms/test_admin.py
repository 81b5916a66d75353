"""The OMS admin: orders (with their audit trail), trades, positions, daily statistics and
kill-switch events are read-only for everyone, strategies refuse nonsense limits (their mode
changes on its own page: test_admin_live.py), the kill switch needs the permission and a
confirmation, and the lists cost the same number of queries whatever the number of rows."""

from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from oms.killswitch import kill_switch_set
from oms.models import DailyStats, KillSwitchEvent, Mode, Order, OrderEvent, Position, Strategy, Trade
from oms.monitor import risk_monitor_run
from tests.factories import InstrumentFactory
from tests.oms.helpers import place, price

pytestmark = pytest.mark.django_db

READ_ONLY = {
    "order": Order, "trade": Trade, "position": Position, "dailystats": DailyStats,
    "killswitchevent": KillSwitchEvent,
}  # fmt: skip


@pytest.fixture
def book(trader, reliance):
    """A filled buy, a resting LIMIT, a refusal, a marked position and a kill-switch event."""
    price(reliance.instrument_token, "100")
    filled = place(reliance, user=trader).order
    resting = place(reliance, user=trader, order_type="LIMIT", price="95").order
    place(reliance, user=trader, order_type="LIMIT", price="150")  # RISK REJECTED: price band
    price(reliance.instrument_token, "102")
    risk_monitor_run()
    kill_switch_set(state="HALTED", by=trader, reason="lunch")
    kill_switch_set(state="ACTIVE", by=trader, reason="")
    return {"filled": filled, "resting": resting}


def _counts():
    return {model: model.objects.count() for model in (*READ_ONLY.values(), OrderEvent)}


# --- nobody edits what the OMS writes ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(READ_ONLY))
def test_oms_rows_cannot_be_added_changed_or_deleted_by_hand(staff_client, book, name):
    model = READ_ONLY[name]
    row = model.objects.order_by("pk").first()
    base = f"/admin/oms/{name}/"
    before = _counts()
    assert staff_client.get(base).status_code == 200
    view = staff_client.get(f"{base}{row.pk}/change/")
    assert view.status_code == 200 and b'name="_save"' not in view.content  # a view, not a form
    assert staff_client.get(f"{base}add/").status_code == 403
    assert staff_client.post(f"{base}add/", {}).status_code == 403
    assert (
        staff_client.post(f"{base}{row.pk}/change/", {"status": "COMPLETE", "quantity": "1"}).status_code
        == 403
    )
    assert staff_client.get(f"{base}{row.pk}/delete/").status_code == 403
    assert staff_client.post(f"{base}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    listed = staff_client.get(base)
    assert b'name="action"' not in listed.content  # no bulk actions at all
    bulk = staff_client.post(base, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes",
                                    "index": "0"})  # fmt: skip
    assert bulk.status_code in (200, 302)
    assert _counts() == before


def test_the_order_page_shows_its_trail_and_trades_read_only(staff_client, book, settings):
    settings.KITE_API_SECRET = "kite-secret-value-42"
    order = book["filled"]
    OrderEvent.objects.filter(order=order).update(
        payload={
            "checksum": "c" * 64,
            "meta": "{'access_token': 'tok-in-text-99'}",
            "note": "kite-secret-value-42",
        }
    )
    page = staff_client.get(f"/admin/oms/order/{order.pk}/change/").content.decode()
    assert "Audit trail" in page and "placed" in page and "Trade" in page
    trade = Trade.objects.get(order=order)
    assert trade.trade_id in page
    for secret in ("c" * 64, "tok-in-text-99", "kite-secret-value-42"):
        assert secret not in page
    assert 'name="events-0-message"' not in page and 'name="trades-0-price"' not in page  # no inline inputs
    before = _counts()
    response = staff_client.post(f"/admin/oms/order/{order.pk}/change/", {
        "events-TOTAL_FORMS": "1", "events-INITIAL_FORMS": "0", "events-0-message": "forged",
        "trades-TOTAL_FORMS": "1", "trades-INITIAL_FORMS": "0", "trades-0-price": "1"})  # fmt: skip
    assert response.status_code == 403 and _counts() == before


# --- filters ------------------------------------------------------------------------------------------


def _ids(response):
    return {row.pk for row in response.context["cl"].result_list}


def test_orders_filter_by_status_strategy_and_day(staff_client, book, reliance, trader):
    algo = Strategy.objects.create(name="algo1")
    other = place(reliance, user=trader, strategy="algo1", order_type="LIMIT", price="96").order
    yesterday = timezone.now() - timedelta(days=1)
    Order.objects.filter(pk=book["filled"].pk).update(placed_at=yesterday)
    base = "/admin/oms/order/"
    assert _ids(staff_client.get(base, {"status__exact": "OPEN"})) == {book["resting"].pk, other.pk}
    assert _ids(staff_client.get(base, {"strategy__id__exact": algo.pk})) == {other.pk}
    assert book["filled"].pk not in _ids(staff_client.get(base, {"day": "today"}))
    assert _ids(staff_client.get(base, {"day": "yesterday"})) == {book["filled"].pk}
    assert book["filled"].pk in _ids(staff_client.get(base, {"day": "week"}))
    day = timezone.localtime(yesterday)
    drilled = staff_client.get(base, {"placed_at__year": day.year, "placed_at__month": day.month,
                                      "placed_at__day": day.day})  # fmt: skip
    assert _ids(drilled) == {book["filled"].pk}
    assert _ids(staff_client.get(base, {"q": book["resting"].broker_order_id})) == {book["resting"].pk}
    assert _ids(staff_client.get(base, {"q": str(other.pk)})) >= {other.pk}


def test_positions_show_pnl_and_filter_open_or_flat(staff_client, book, reliance, trader):
    page = staff_client.get("/admin/oms/position/")
    [position] = page.context["cl"].result_list
    assert position.quantity == 10 and position.unrealised == D("20")  # bought 10 at 100, marked at 102
    assert "20.00" in page.content.decode() and "P&amp;L" in page.content.decode()
    assert _ids(staff_client.get("/admin/oms/position/", {"open": "yes"})) == {position.pk}
    assert _ids(staff_client.get("/admin/oms/position/", {"open": "no"})) == set()
    place(reliance, user=trader, transaction_type="SELL")
    assert _ids(staff_client.get("/admin/oms/position/", {"open": "no"})) == {position.pk}


QUERY_PARAMETERS = {
    "order": ("q", "status__exact", "strategy__id__exact", "day", "broker__exact", "placed_at__year",
              "placed_at__month", "placed_at__day", "o", "p"),
    "trade": ("q", "strategy__id__exact", "day", "filled_at__year", "o", "p"),
    "position": ("q", "open", "strategy__id__exact", "product__exact", "o"),
    "killswitchevent": ("state__exact", "automatic__exact", "strategy__id__exact", "at__year", "o"),
}  # fmt: skip
TRICKY = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
    st.sampled_from(["\x00", "RELIANCE\x00", "OPEN", "1", "-1", "0", "99999999999999999999", "2024", "13", "9999", "0001",
                     "today", "%", "'", "1.5", "x" * 200]),
)  # fmt: skip


@override_settings(API_THROTTLE_USER="1000000/min")
@hypothesis_settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_filter_or_search_on_the_lists_is_answered(staff_client, book, data):
    name = data.draw(st.sampled_from(sorted(QUERY_PARAMETERS)))
    query = data.draw(st.dictionaries(st.sampled_from(QUERY_PARAMETERS[name]), TRICKY, max_size=3))
    response = staff_client.get(f"/admin/oms/{name}/", query)
    assert response.status_code in (200, 302), (name, query, response.status_code)


@pytest.mark.parametrize(
    ("name", "query"),
    [("order", {"status__exact": "\x00"}), ("order", {"q": "RELIANCE\x00"}), ("trade", {"strategy__id__exact": "\x00"}),
     ("order", {"placed_at__year": "2200000000"}), ("trade", {"filled_at__year": "99999999999999999999"}),
     ("killswitchevent", {"at__year": "1"}), ("killswitchevent", {"at__year": "9999"}),
     ("order", {"placed_at__year": "2024", "placed_at__month": "٣"})],
)  # fmt: skip
def test_a_query_the_admin_would_fail_on_starts_the_list_over(staff_client, book, name, query):
    response = staff_client.get(f"/admin/oms/{name}/", query)
    assert response.status_code == 302 and response["Location"] == f"/admin/oms/{name}/?e=1"
    assert staff_client.get(response["Location"]).status_code == 200


# --- strategies ---------------------------------------------------------------------------------------


def _strategy_form(strategy=None, **changes):
    data = {"name": strategy.name if strategy else "algo2", "description": "", "mode": "PAPER", "enabled": "on",
            "capital": "100000"}  # fmt: skip
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_the_strategy_form_never_changes_the_mode(staff_client, manual):
    """The mode changes only on its confirmation page (tests/oms/test_admin_live.py)."""
    page = staff_client.get(f"/admin/oms/strategy/{manual.pk}/change/").content.decode()
    assert 'name="mode"' not in page and "Switch to LIVE" in page
    response = staff_client.post(
        f"/admin/oms/strategy/{manual.pk}/change/", _strategy_form(manual, mode="LIVE")
    )
    assert response.status_code == 302
    manual.refresh_from_db()
    assert manual.mode == Mode.PAPER
    assert 'name="mode"' not in staff_client.get("/admin/oms/strategy/add/").content.decode()
    assert staff_client.post("/admin/oms/strategy/add/", _strategy_form(mode="LIVE")).status_code == 302
    assert Strategy.objects.get(name="algo2").mode == Mode.PAPER


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_daily_loss", "-1000"), ("max_daily_loss", "0"), ("max_order_quantity", "0"), ("max_drawdown", "-5"),
     ("price_band_percent", "150"), ("max_risk_per_trade_percent", "0"), ("capital", "-1")],
)  # fmt: skip
def test_strategy_limits_must_make_sense(staff_client, manual, field, value):
    response = staff_client.post(
        f"/admin/oms/strategy/{manual.pk}/change/", _strategy_form(manual, **{field: value})
    )
    assert response.status_code == 200 and field in response.context["adminform"].form.errors
    manual.refresh_from_db()
    assert getattr(manual, field) in (None, D(0))  # unchanged: blank limit, no capital


def test_a_strategys_limits_are_edited_and_its_name_is_kept(staff_client, manual):
    form = _strategy_form(manual, name="renamed", max_daily_loss="25000", price_band_percent="5")
    assert staff_client.post(f"/admin/oms/strategy/{manual.pk}/change/", form).status_code == 302
    manual.refresh_from_db()
    assert (
        manual.name == "manual"
        and manual.max_daily_loss == D("25000")
        and manual.price_band_percent == D("5")
    )
    assert staff_client.get(f"/admin/oms/strategy/{manual.pk}/delete/").status_code == 403


# --- the kill switch ----------------------------------------------------------------------------------


@pytest.fixture
def desk_staff(django_user_model):
    """Staff who may look at the OMS in the admin but not operate the kill switch."""
    user = django_user_model.objects.create_user(username="desk", password="desk-pass-123", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="oms", codename__startswith="view_")
    )
    return user


def test_the_kill_switch_page_needs_the_permission(client, desk_staff):
    client.force_login(desk_staff)
    listed = client.get("/admin/oms/killswitchevent/")
    assert listed.status_code == 200 and b"ks-operate" not in listed.content
    assert b"needs the" in listed.content
    assert client.get("/admin/oms/killswitchevent/operate/").status_code == 403
    post = client.post(
        "/admin/oms/killswitchevent/operate/", {"action": "halted", "reason": "x", "confirm": "on"}
    )
    assert post.status_code == 403 and not KillSwitchEvent.objects.exists()
    desk_staff.user_permissions.add(Permission.objects.get(codename="operate_kill_switch"))
    client.force_login(desk_staff)
    assert client.get("/admin/oms/killswitchevent/operate/").status_code == 200
    assert b"ks-operate" in client.get("/admin/oms/killswitchevent/").content


def test_engaging_needs_a_confirmation_and_a_reason(staff_client, book):
    url = "/admin/oms/killswitchevent/operate/"
    before = KillSwitchEvent.objects.count()
    page = staff_client.get(url)
    assert page.context["open_orders"] == 1 and page.context["open_positions"] == 1
    unconfirmed = staff_client.post(url, {"action": "halted", "reason": "risk off"})
    assert "I confirm" in unconfirmed.context["form"].errors["confirm"][0]
    no_reason = staff_client.post(url, {"action": "halted", "confirm": "on"})
    assert "reason" in no_reason.context["form"].errors
    odd = staff_client.post(url, {"action": "release", "cancel_open": "on", "confirm": "on"})
    assert "action" in odd.context["form"].errors
    assert KillSwitchEvent.objects.count() == before
    done = staff_client.post(url, {"action": "halted", "reason": "risk off", "cancel_open": "on", "confirm": "on"},
                             follow=True)  # fmt: skip
    text = " ".join(str(m) for m in done.context["messages"])
    assert "Kill switch HALTED for the whole desk" in text and "Open orders cancelled: 1 (0 failed)" in text
    event = KillSwitchEvent.objects.order_by("-pk").first()
    assert event.state == "HALTED" and event.reason == "risk off" and event.by.username == "operator"
    book["resting"].refresh_from_db()
    assert book["resting"].status == "CANCELLED"
    assert b"Kill switch: HALTED" in staff_client.get("/admin/oms/killswitchevent/").content


# --- the lists cost the same whatever their length ----------------------------------------------------


def _grow(trader, *, count):
    """``count`` more instruments, each with a filled and a resting order and a position
    (spread over three strategies), and kill-switch events by people and by the system,
    for the desk and for strategies."""
    strategies = [Strategy.objects.get_or_create(name=f"s{i}")[0] for i in range(3)]
    for i in range(count):
        strategy = strategies[i % 3]
        instrument = InstrumentFactory(is_active=True)
        price(instrument.instrument_token, "100")
        place(instrument, user=trader, strategy=strategy.name)
        place(instrument, user=trader, strategy=strategy.name, order_type="LIMIT", price="95")
        scope = strategy if i % 2 else None
        kill_switch_set(state="HALTED", by=trader if i % 3 else None, reason=f"r{i}", strategy=scope)
        kill_switch_set(state="ACTIVE", by=trader, reason="", strategy=scope)


@pytest.mark.parametrize("name", ["order", "trade", "position", "killswitchevent", "dailystats"])
def test_the_lists_make_no_query_per_row(staff_client, trader, settings, django_assert_num_queries, name):
    settings.OMS_ORDERS_PER_SECOND = 10_000  # the test places orders faster than a desk may
    _grow(trader, count=2)
    url = f"/admin/oms/{name}/"
    staff_client.get(url)  # warm the session and the content types
    with CaptureQueriesContext(connection) as few:
        assert staff_client.get(url).status_code == 200
    _grow(trader, count=10)
    with django_assert_num_queries(len(few.captured_queries)):
        response = staff_client.get(url)
    assert len(response.context["cl"].result_list) >= (3 if name == "dailystats" else 12)


def test_the_kill_switch_state_costs_the_same_whatever_the_number_of_strategies(trader):
    from oms.killswitch import kill_switch_status

    def engage(names):
        for name in names:
            kill_switch_set(
                state="HALTED", by=trader, reason="x", strategy=Strategy.objects.create(name=name)
            )

    engage(["a1", "a2"])
    with CaptureQueriesContext(connection) as few:
        kill_switch_status()
    engage([f"b{i}" for i in range(10)])
    with CaptureQueriesContext(connection) as many:
        kill_switch_status()
    assert len(many.captured_queries) == len(few.captured_queries)


def test_the_order_page_makes_no_query_per_event(staff_client, book, django_assert_num_queries):
    order = book["resting"]
    url = f"/admin/oms/order/{order.pk}/change/"
    staff_client.get(url)
    with CaptureQueriesContext(connection) as few:
        staff_client.get(url)
    now = timezone.now()
    OrderEvent.objects.bulk_create(
        [OrderEvent(order=order, at=now, kind="warning", source="risk", message=f"w{i}") for i in range(20)]
    )
    with django_assert_num_queries(len(few.captured_queries)):
        assert staff_client.get(url).status_code == 200


# --- in a real browser at a laptop's width --------------------------------------------------------

WIDTH, HEIGHT = 1366, 768


def _fits(page, what):
    """The page does not scroll sideways, nor does the result table."""
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH, what
    results = page.locator("#changelist-form .results")
    if results.count():
        assert results.evaluate("e => e.scrollWidth <= e.clientWidth"), f"{what}: the table scrolls sideways"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_oms_admin_in_a_browser_at_1366px(django_user_model, settings, chromium, port, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from tests.factories import NiftyOptionFactory
    from tests.helpers import CHROMIUM_ARGS, port_open, portal_env, running, uvicorn_argv, wait_for

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    settings.OMS_ORDERS_PER_SECOND = 10_000
    operator = django_user_model.objects.create_user(
        username="operator", password="operator-pass-123", is_staff=True, is_superuser=True
    )
    Strategy.objects.create(name="banknifty-straddle-intraday", capital=D("2500000"))
    option = NiftyOptionFactory(tradingsymbol="MIDCPNIFTY99DEC13025CE", instrument_token=12_345_602,
                                lot_size=1, tick_size=D("0.05"), is_active=True)  # fmt: skip
    price(option.instrument_token, "1234.55")
    for strategy in ("manual", "banknifty-straddle-intraday"):
        place(option, user=operator, strategy=strategy)
        place(
            option, user=operator, strategy=strategy, order_type="LIMIT", price="1200.05", tag="entry-leg-1"
        )
    order = place(option, user=operator, order_type="LIMIT", price="1500").order  # price band refusal
    price(option.instrument_token, "1240.10")
    risk_monitor_run()
    manual = Strategy.objects.get(name="manual").pk  # (no ORM inside Playwright's event loop)
    env = portal_env(redis=False, INGESTION_IN_PROCESS="0")
    with running(uvicorn_argv(port), env, tmp_path / "web.log"), sync_playwright() as playwright:
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            base = f"http://127.0.0.1:{port}/admin/"
            page.goto(f"{base}login/?next=/admin/oms/order/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", "operator-pass-123")
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/oms/order/")
            expect(page.locator("#result_list tbody tr")).to_have_count(5)
            expect(page.locator("#result_list")).to_contain_text("RISK REJECTED")
            expect(page.locator("#changelist-filter")).to_contain_text("By day")
            page.screenshot(path=str(tmp_path / "orders.png"))
            _fits(page, "orders")

            page.goto(f"{base}oms/order/{order.pk}/change/")
            expect(page.locator("body")).to_contain_text("Audit trail")
            expect(page.locator("body")).to_contain_text("price_band")
            assert page.locator('input[name="_save"]').count() == 0  # read-only
            page.screenshot(path=str(tmp_path / "order.png"), full_page=True)

            for name in ("trade", "position", "dailystats"):
                page.goto(f"{base}oms/{name}/")
                expect(page.locator("#result_list tbody tr").first).to_be_visible()
                page.screenshot(path=str(tmp_path / f"{name}.png"))
                _fits(page, name)
            expect(page.locator("#result_list")).to_contain_text("banknifty-straddle-intraday")

            page.goto(f"{base}oms/strategy/{manual}/change/")
            assert page.locator("#id_mode").count() == 0  # the mode has its own page (test_admin_live.py)
            expect(page.locator("#strategy-switch-mode")).to_have_text("Switch to LIVE…")
            page.screenshot(path=str(tmp_path / "strategy.png"), full_page=True)

            page.goto(f"{base}oms/killswitchevent/")
            expect(page.locator("#ks-state")).to_have_text("Kill switch: ACTIVE")
            page.click("#ks-operate")
            expect(page.locator("#ks-open-orders")).to_have_text("2")
            page.select_option("#id_action", "halted")
            page.fill("#id_reason", "volatility after the RBI policy")
            page.click("input[type=submit][value=Apply]")  # not confirmed
            expect(page.locator(".errorlist")).to_contain_text("I confirm")
            page.screenshot(path=str(tmp_path / "kill-switch-confirm.png"), full_page=True)
            _fits(page, "kill switch page")
            page.check("#id_confirm")
            page.check("#id_cancel_open")
            page.click("input[type=submit][value=Apply]")
            page.wait_for_url("**/admin/oms/killswitchevent/")
            expect(page.locator(".messagelist")).to_contain_text("Kill switch HALTED for the whole desk")
            expect(page.locator("#ks-state")).to_have_text("Kill switch: HALTED")
            page.screenshot(path=str(tmp_path / "kill-switch-engaged.png"))
            _fits(page, "kill switch list")
        finally:
            browser.close()
    assert Order.objects.filter(status="OPEN").count() == 0
    assert KillSwitchEvent.objects.get().by == operator


# --- what the admin shows from the models (the lead's files) ---------------------------------------


def test_an_audit_events_title_has_the_market_time(book):
    event = OrderEvent.objects.filter(order=book["filled"]).first()
    assert timezone.localtime(event.at).strftime("%H:%M:%S") in str(event)


def test_order_choices_read_as_kite_writes_them():
    assert Order.Product.MIS.label == "MIS" and Order.OrderType.SLM.label == "SL-M"
    assert Order.Validity.IOC.label == "IOC" and Order.TransactionType.BUY.label == "BUY"
