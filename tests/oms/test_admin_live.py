"""Switching a strategy between PAPER and LIVE in the admin: the dedicated permission, the
confirmation page (the strategy, each limit that applies, its Kite settings, the
consequence), the strategy's name typed to confirm, refusals that say why (Kite not
configured, orders or positions still open), and every switch audited. Credentials alone
never make a strategy live. The strategy form's Kite fields."""

import html
import threading
from decimal import Decimal as D

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from oms.models import Mode, Order, Position, Strategy, StrategyModeChange
from oms.services import order_cancel
from oms.strategy_mode import ModeSwitchRefused, strategy_mode_set
from tests.conftest import requires_postgres
from tests.helpers import wait_for
from tests.oms.helpers import place, price

pytestmark = pytest.mark.django_db

KITE = {"KITE_API_KEY": "kiteapikey01", "KITE_ACCESS_TOKEN": "live-access-token-7f3a9c",
        "KITE_ACCESS_TOKEN_FILE": "", "KITE_API_SECRET": "kite-api-secret-5d2e8b"}  # fmt: skip


@pytest.fixture
def kite(settings):
    """Kite configured as a LIVE strategy needs it."""
    for name, value in KITE.items():
        setattr(settings, name, value)
    return settings


@pytest.fixture
def algo():
    return Strategy.objects.create(
        name="nifty-momentum", description="NIFTY options, intraday", capital=D("500000"),
        max_daily_loss=D("25000"), max_order_quantity=900, algo_id="NSEALGO-1042",
        market_protection=D("2.5"), allow_autoslice=True,
    )  # fmt: skip


def _staff(django_user_model, username, *codenames):
    user = django_user_model.objects.create_user(
        username=username, password=f"{username}-pass-123", is_staff=True
    )
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="oms", codename__in=codenames)
    )
    return user


@pytest.fixture
def editor(django_user_model):
    """Staff who may edit strategies but not switch their mode."""
    return _staff(django_user_model, "editor", "view_strategy", "change_strategy")


@pytest.fixture
def risk_manager(django_user_model):
    """Staff with the dedicated permission (and no other strategy permission)."""
    return _staff(django_user_model, "riskmgr", "view_strategy", "change_strategy_mode")


def _url(strategy):
    return f"/admin/oms/strategy/{strategy.pk}/mode/"


def _switch(client, strategy, mode, name=None, note=""):
    return client.post(_url(strategy), {"mode": mode, "confirm_name": strategy.name if name is None else name,
                                        "note": note})  # fmt: skip


def _problems(response):
    return " ".join(response.context["problems"])


def _errors(response):
    form = response.context["form"]
    return " ".join(form.non_field_errors() + form.errors.get("confirm_name", []))


# --- the permission --------------------------------------------------------------------------------------


def test_the_switch_needs_the_dedicated_permission(client, editor, risk_manager, algo, kite):
    client.force_login(editor)
    page = client.get(f"/admin/oms/strategy/{algo.pk}/change/").content.decode()
    assert "strategy-switch-mode" not in page and "Can switch a strategy between paper and live" in page
    assert client.get(_url(algo)).status_code == 403
    assert _switch(client, algo, "LIVE").status_code == 403
    with pytest.raises(ModeSwitchRefused, match="needs the permission"):
        strategy_mode_set(strategy_id=algo.pk, mode="LIVE", by=editor, confirmation=algo.name)
    algo.refresh_from_db()
    assert algo.mode == Mode.PAPER and not StrategyModeChange.objects.exists()

    client.force_login(risk_manager)
    assert "strategy-switch-mode" in client.get(f"/admin/oms/strategy/{algo.pk}/change/").content.decode()
    assert client.get(_url(algo)).status_code == 200
    assert _switch(client, algo, "LIVE").status_code == 302
    algo.refresh_from_db()
    assert algo.mode == Mode.LIVE


def test_anonymous_and_non_staff_users_never_reach_the_switch(client, trader_client, algo, kite):
    assert client.get(_url(algo)).status_code == 302  # to the login page
    assert trader_client.post(_url(algo), {"mode": "LIVE", "confirm_name": algo.name}).status_code == 302
    algo.refresh_from_db()
    assert algo.mode == Mode.PAPER


def test_an_unknown_strategy_is_a_404(staff_client):
    assert staff_client.get("/admin/oms/strategy/999999/mode/").status_code == 404


# --- the confirmation page ----------------------------------------------------------------------------


def test_the_confirmation_page_names_the_strategy_its_limits_and_the_consequence(staff_client, algo, kite):
    response = staff_client.get(_url(algo))
    page = html.unescape(response.content.decode())
    assert "Orders of this strategy will be sent to Kite with real money" in page
    assert "Switch strategy nifty-momentum to LIVE" in page and "NIFTY options, intraday" in page
    assert "₹500000" in page and "NSEALGO-1042" in page and "2.5%" in page
    assert "an F&O order above its freeze quantity is sent sliced by Kite" in page
    limits = {limit.name: limit for limit in response.context["limits"]}
    assert len(limits) == 11  # every limit of the risk validator
    assert limits["max_daily_loss"].value == D("25000") and limits["max_daily_loss"].own
    assert limits["max_order_quantity"].value == 900 and limits["max_order_quantity"].own
    assert limits["max_drawdown"].value == D("50000") and not limits["max_drawdown"].own  # OMS_MAX_DRAWDOWN
    assert "global (OMS_MAX_DRAWDOWN)" in page and "the strategy's own" in page
    assert "Max daily loss (₹)" in page and "Price band (% from the last price)" in page
    assert response.context["problems"] == []
    for secret in KITE.values():
        if secret:
            assert secret not in page  # no credential on the page


def test_automatic_market_protection_and_no_algo_id_are_said(staff_client, manual, kite):
    page = html.unescape(staff_client.get(_url(manual)).content.decode())
    assert "-1 (the exchange's automatic protection)" in page
    assert "none (SEBI requires one on the orders of a registered algo)" in page
    assert "refused with the limit named" in page


# --- typed confirmation, audit ----------------------------------------------------------------------------


def test_going_live_needs_the_strategys_name_typed_and_is_audited(staff_client, staff_user, algo, kite):
    for typed in ("", "nifty", "NIFTY-MOMENTUM", "manual"):
        response = _switch(staff_client, algo, "LIVE", name=typed)
        assert response.status_code == 200 and "nifty-momentum" in _errors(response)
    algo.refresh_from_db()
    assert algo.mode == Mode.PAPER and not StrategyModeChange.objects.exists()

    before = timezone.now()
    done = staff_client.post(_url(algo), {"mode": "LIVE", "confirm_name": " nifty-momentum ",
                                          "note": "approved by the risk committee"}, follow=True)  # fmt: skip
    assert "Strategy nifty-momentum is now LIVE" in " ".join(str(m) for m in done.context["messages"])
    algo.refresh_from_db()
    assert algo.mode == Mode.LIVE
    change = StrategyModeChange.objects.get()
    assert (change.strategy, change.by, change.by_username) == (algo, staff_user, "operator")
    assert (change.old_mode, change.new_mode, change.note) == (
        "PAPER",
        "LIVE",
        "approved by the risk committee",
    )
    assert change.at >= before
    assert change.confirmed["algo_id"] == "NSEALGO-1042" and change.confirmed["allow_autoslice"] is True
    assert change.confirmed["market_protection"] == "2.50" and change.confirmed["capital"] == "500000.0000"
    assert change.confirmed["limits"]["max_daily_loss"] == {"value": "25000.0000", "own": True}
    assert change.confirmed["limits"]["max_drawdown"]["own"] is False
    entry = LogEntry.objects.get(object_id=str(algo.pk))
    assert entry.user == staff_user and "Switched from PAPER to LIVE" in entry.get_change_message()
    page = staff_client.get(f"/admin/oms/strategy/{algo.pk}/change/").content.decode()
    assert "its orders go to Kite, with real money" in page and "Switch to PAPER…" in page
    assert "approved by the risk committee" in page  # the mode history on the strategy's page

    back = staff_client.post(_url(algo), {"mode": "PAPER", "confirm_name": "nifty-momentum"})
    assert back.status_code == 302
    algo.refresh_from_db()
    assert algo.mode == Mode.PAPER
    assert list(StrategyModeChange.objects.order_by("id").values_list("old_mode", "new_mode")) == [
        ("PAPER", "LIVE"), ("LIVE", "PAPER")]  # fmt: skip


def test_a_stale_page_never_switches_the_other_way(staff_client, algo, kite):
    assert _switch(staff_client, algo, "LIVE").status_code == 302
    # The same page submitted again (another tab, a double click): the strategy is LIVE already.
    again = staff_client.post(_url(algo), {"mode": "LIVE", "confirm_name": algo.name}, follow=True)
    assert "already LIVE" in " ".join(str(m) for m in again.context["messages"])
    algo.refresh_from_db()
    assert algo.mode == Mode.LIVE and StrategyModeChange.objects.count() == 1


def test_a_bad_mode_is_a_form_error(staff_client, algo, kite):
    response = staff_client.post(_url(algo), {"mode": "YOLO", "confirm_name": algo.name})
    assert response.status_code == 200 and "mode" in response.context["form"].errors
    algo.refresh_from_db()
    assert algo.mode == Mode.PAPER


def test_the_mode_changes_are_read_only(staff_client, algo, kite):
    _switch(staff_client, algo, "LIVE")
    change = StrategyModeChange.objects.get()
    assert staff_client.get("/admin/oms/strategymodechange/").status_code == 200
    assert staff_client.get(f"/admin/oms/strategymodechange/{change.pk}/change/").status_code == 200
    assert staff_client.get("/admin/oms/strategymodechange/add/").status_code == 403
    assert (
        staff_client.post(f"/admin/oms/strategymodechange/{change.pk}/change/", {"note": "x"}).status_code
        == 403
    )
    assert (
        staff_client.post(f"/admin/oms/strategymodechange/{change.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    change.refresh_from_db()
    assert change.note == ""


def test_the_mode_change_list_and_the_strategy_page_make_no_query_per_row(
    staff_client, staff_user, kite, django_assert_num_queries
):
    def switches(count):
        for i in range(count):
            strategy = Strategy.objects.create(name=f"s{Strategy.objects.count()}-{i}")
            for mode in (Mode.LIVE, Mode.PAPER):
                strategy_mode_set(
                    strategy_id=strategy.pk, mode=mode, by=staff_user, confirmation=strategy.name
                )
        return strategy

    last = switches(2)
    urls = ["/admin/oms/strategymodechange/", f"/admin/oms/strategy/{last.pk}/change/"]
    counts = []
    for url in urls:
        staff_client.get(url)
        with CaptureQueriesContext(connection) as few:
            assert staff_client.get(url).status_code == 200
        counts.append(len(few.captured_queries))
    switches(10)
    for _ in range(5):  # the last strategy switched many times
        strategy_mode_set(strategy_id=last.pk, mode=Mode.LIVE, by=staff_user, confirmation=last.name)
        strategy_mode_set(strategy_id=last.pk, mode=Mode.PAPER, by=staff_user, confirmation=last.name)
    for url, count in zip(urls, counts, strict=True):
        with django_assert_num_queries(count):
            assert staff_client.get(url).status_code == 200


# --- Kite credentials ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "said"),
    [({"KITE_API_KEY": ""}, "KITE_API_KEY"),
     ({"KITE_ACCESS_TOKEN": ""}, "KITE_ACCESS_TOKEN or KITE_ACCESS_TOKEN_FILE"),
     ({"KITE_API_SECRET": ""}, "KITE_API_SECRET (Kite's order postbacks are verified with it)"),
     ({"KITE_ACCESS_TOKEN": "", "KITE_ACCESS_TOKEN_FILE": "{empty}"}, "KITE_ACCESS_TOKEN_FILE is empty or cannot be read"),
     ({"KITE_ACCESS_TOKEN": "", "KITE_ACCESS_TOKEN_FILE": "{absent}"}, "KITE_ACCESS_TOKEN_FILE is empty or cannot be read")],
)  # fmt: skip
def test_going_live_without_kite_configured_is_refused_with_what_is_missing(
    staff_client, algo, kite, tmp_path, missing, said
):
    (tmp_path / "empty").write_text("\n")
    for name, value in missing.items():
        setattr(kite, name, value.format(empty=tmp_path / "empty", absent=tmp_path / "absent"))
    page = staff_client.get(_url(algo))
    assert said in _problems(page) and "Kite is not configured for live orders" in _problems(page)
    assert 'id="mode-submit" disabled' in page.content.decode()
    refused = _switch(staff_client, algo, "LIVE")
    assert refused.status_code == 200 and said in _problems(refused)
    algo.refresh_from_db()
    assert algo.mode == Mode.PAPER and not StrategyModeChange.objects.exists()


def test_a_token_file_with_todays_token_is_enough(staff_client, algo, kite, tmp_path):
    (tmp_path / "token").write_text("fresh-token-from-the-morning-login\n")
    kite.KITE_ACCESS_TOKEN, kite.KITE_ACCESS_TOKEN_FILE = "", str(tmp_path / "token")
    assert staff_client.get(_url(algo)).context["problems"] == []
    assert _switch(staff_client, algo, "LIVE").status_code == 302


def test_nothing_is_missing_to_go_back_to_paper(staff_client, algo, kite):
    _switch(staff_client, algo, "LIVE")
    kite.KITE_API_KEY = kite.KITE_API_SECRET = ""
    assert _switch(staff_client, algo, "PAPER").status_code == 302
    algo.refresh_from_db()
    assert algo.mode == Mode.PAPER


def test_credentials_alone_never_make_a_strategy_live(kite, reliance, trader, algo):
    price(reliance.instrument_token, "100")
    for strategy in (None, "nifty-momentum"):
        order = place(reliance, user=trader, strategy=strategy).order
        assert order.broker == "paper" and order.status == "COMPLETE"
    assert set(Strategy.objects.values_list("mode", flat=True)) == {Mode.PAPER}


# --- flat first --------------------------------------------------------------------------------------------


def test_a_strategy_with_paper_orders_or_positions_open_does_not_go_live(
    staff_client, algo, kite, reliance, trader
):
    price(reliance.instrument_token, "100")
    resting = place(reliance, user=trader, strategy=algo.name, order_type="LIMIT", price="95").order
    assert resting.status == "OPEN"
    refused = _switch(staff_client, algo, "LIVE")
    assert "1 working order on paper" in _problems(refused) and "Square off" in _problems(refused)
    order_cancel(order_id=resting.pk, user=trader)
    place(reliance, user=trader, strategy=algo.name)  # bought 10 at the market
    assert "1 open position on paper" in _problems(_switch(staff_client, algo, "LIVE"))
    algo.refresh_from_db()
    assert algo.mode == Mode.PAPER and not StrategyModeChange.objects.exists()
    place(reliance, user=trader, strategy=algo.name, transaction_type="SELL")  # flat
    assert _switch(staff_client, algo, "LIVE").status_code == 302


def _live_order(strategy, instrument, **fields):
    now = timezone.now()
    values = {"strategy": strategy, "instrument": instrument, "exchange": instrument.exchange,
              "tradingsymbol": instrument.tradingsymbol, "instrument_token": instrument.instrument_token,
              "transaction_type": "BUY", "quantity": 10, "product": "MIS", "order_type": "LIMIT", "price": D("95"),
              "broker": "kite", "broker_order_id": f"2512010000{Order.objects.count():05d}", "status": "OPEN",
              "pending_quantity": 10, "idempotency_key": f"live-{Order.objects.count()}", "placed_at": now,
              "updated_at": now}  # fmt: skip
    values.update(fields)
    return Order.objects.create(**values)


def test_back_to_paper_is_refused_while_live_orders_or_positions_are_open(staff_client, algo, kite, reliance):
    _switch(staff_client, algo, "LIVE")
    working = _live_order(algo, reliance, status="TRIGGER PENDING", order_type="SL", trigger_price=D("96"))
    unknown = _live_order(algo, reliance, status="PUT ORDER REQ RECEIVED")  # sent, answer not known yet
    refused = _switch(staff_client, algo, "PAPER")
    assert "2 working orders at Kite" in _problems(refused)
    Order.objects.filter(pk__in=[working.pk, unknown.pk]).update(status="CANCELLED", pending_quantity=0)
    Position.objects.create(strategy=algo, instrument=reliance, exchange="NSE", tradingsymbol="RELIANCE",
                            instrument_token=reliance.instrument_token, product="MIS", quantity=-10,
                            average_price=D("100"), updated_at=timezone.now())  # fmt: skip
    assert "1 open position at Kite" in _problems(_switch(staff_client, algo, "PAPER"))
    algo.refresh_from_db()
    assert algo.mode == Mode.LIVE and StrategyModeChange.objects.count() == 1
    Position.objects.filter(strategy=algo).update(quantity=0)
    assert _switch(staff_client, algo, "PAPER").status_code == 302
    algo.refresh_from_db()
    assert algo.mode == Mode.PAPER


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_the_switch_waits_for_a_placement_in_flight_and_sees_its_order(django_user_model, kite):
    """A placement holds the strategy row until it commits; the switch takes the same lock,
    so it decides on the order the placement stored, never before it."""
    from tests.factories import InstrumentFactory

    operator = django_user_model.objects.create_user(username="op", password="op-pass-123", is_superuser=True)
    algo = Strategy.objects.create(name="algo-lock")
    instrument = InstrumentFactory(is_active=True)
    locked, release = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def placement():
        try:
            with transaction.atomic():
                Strategy.objects.select_for_update().get(pk=algo.pk)
                locked.set()
                _live_order(algo, instrument, broker="paper", broker_order_id=None)
                release.wait(timeout=60)
        finally:
            connection.close()

    def switch():
        try:
            strategy_mode_set(strategy_id=algo.pk, mode="LIVE", by=operator, confirmation=algo.name)
            outcome["result"] = "switched"
        except ModeSwitchRefused as refused:
            outcome["result"] = " ".join(refused.reasons)
        finally:
            connection.close()

    placing = threading.Thread(target=placement)
    placing.start()
    assert locked.wait(timeout=30)
    switching = threading.Thread(target=switch)
    switching.start()

    def switch_waits_on_the_lock():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return cursor.fetchone()[0] > 0

    wait_for(switch_waits_on_the_lock, timeout=30, what="the switch waiting for the strategy's lock")
    assert "result" not in outcome
    release.set()
    placing.join(timeout=30)
    switching.join(timeout=30)
    assert "1 working order on paper" in str(outcome["result"])
    algo.refresh_from_db()
    assert algo.mode == Mode.PAPER


# --- the strategy form's Kite fields ------------------------------------------------------------------------


def _form(strategy, **changes):
    """The strategy page as a browser posts it (an empty input is an empty string; an
    unticked box is absent)."""
    data = {"description": strategy.description, "enabled": "on", "capital": str(strategy.capital),
            "algo_id": strategy.algo_id, "market_protection": "", "allow_autoslice": None}  # fmt: skip
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize(
    ("value", "stored"), [("", None), ("-1", D("-1")), ("0.5", D("0.5")), ("100", D("100"))]
)
def test_market_protection_is_automatic_or_a_percent(staff_client, algo, value, stored):
    response = staff_client.post(
        f"/admin/oms/strategy/{algo.pk}/change/", _form(algo, market_protection=value)
    )
    assert response.status_code == 302
    algo.refresh_from_db()
    assert algo.market_protection == stored


@pytest.mark.parametrize("value", ["0", "-2", "-0.5", "100.01", "1000", "abc", "1e2x"])
def test_market_protection_outside_its_range_is_a_form_error(staff_client, algo, value):
    response = staff_client.post(
        f"/admin/oms/strategy/{algo.pk}/change/", _form(algo, market_protection=value)
    )
    assert response.status_code == 200 and "market_protection" in response.context["adminform"].form.errors
    algo.refresh_from_db()
    assert algo.market_protection == D("2.5")


def test_algo_id_and_autoslice_are_edited(staff_client, algo):
    bad = staff_client.post(f"/admin/oms/strategy/{algo.pk}/change/", _form(algo, algo_id="NSE 1042; DROP"))
    assert "algo_id" in bad.context["adminform"].form.errors
    ok = staff_client.post(f"/admin/oms/strategy/{algo.pk}/change/", _form(algo, algo_id="  ALGO_77-b  "))
    assert ok.status_code == 302
    algo.refresh_from_db()
    assert algo.algo_id == "ALGO_77-b" and algo.allow_autoslice is False  # unticked
    staff_client.post(f"/admin/oms/strategy/{algo.pk}/change/", _form(algo, allow_autoslice="on", algo_id=""))
    algo.refresh_from_db()
    assert algo.algo_id == "" and algo.allow_autoslice is True


# --- in a real browser at a laptop's width ---------------------------------------------------------------

WIDTH, HEIGHT = 1366, 768
SCREENSHOTS = "OMS_SCREENSHOTS"  # a folder to keep the screenshots in (to look at them)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_switching_to_live_in_a_browser_at_1366px(django_user_model, settings, chromium, port, tmp_path):
    import os
    from pathlib import Path

    from playwright.sync_api import expect, sync_playwright

    from oms.models import FreezeLimit
    from tests.factories import InstrumentFactory
    from tests.helpers import CHROMIUM_ARGS, port_open, portal_env, running, uvicorn_argv

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    django_user_model.objects.create_user(
        username="operator", password="operator-pass-123", is_staff=True, is_superuser=True
    )
    algo = Strategy.objects.create(
        name="banknifty-straddle-intraday", description="BANKNIFTY short straddle, squared off by 15:10",
        capital=D("2500000"), max_daily_loss=D("75000"), max_order_quantity=1800, algo_id="NSEALGO-100042",
        allow_autoslice=True,
    )  # fmt: skip
    FreezeLimit.objects.update_or_create(exchange="NFO", underlying="BANKNIFTY",
                                         defaults={"freeze_quantity": 600, "source": "seed"})  # fmt: skip
    live = Strategy.objects.create(name="nifty-live", mode=Mode.LIVE)  # went LIVE earlier, holds a position
    Position.objects.create(strategy=live, instrument=InstrumentFactory(), exchange="NFO", tradingsymbol="NIFTY26DECFUT",
                            instrument_token=9_000_001, product="NRML", quantity=75, updated_at=timezone.now())  # fmt: skip
    shots = Path(os.environ.get(SCREENSHOTS) or tmp_path)
    env = portal_env(redis=False, INGESTION_IN_PROCESS="0", **KITE)
    with running(uvicorn_argv(port), env, tmp_path / "web.log"), sync_playwright() as playwright:
        wait_for(lambda: port_open(port), timeout=30, what="uvicorn")
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            base = f"http://127.0.0.1:{port}/admin/"
            page.goto(f"{base}login/?next=/admin/oms/strategy/{algo.pk}/change/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", "operator-pass-123")
            page.click("input[type=submit]")
            page.wait_for_url(f"**/admin/oms/strategy/{algo.pk}/change/")
            page.fill("#id_market_protection", "0")  # not a protection: refused on the form
            page.click('input[name="_save"]')
            expect(page.locator(".field-market_protection .errorlist")).to_contain_text(
                "automatic protection"
            )
            page.fill("#id_market_protection", "3")
            page.click('input[name="_continue"]')
            expect(page.locator(".messagelist")).to_contain_text("was changed successfully")

            page.click("#strategy-switch-mode")
            page.wait_for_url(f"**/admin/oms/strategy/{algo.pk}/mode/")
            expect(page.locator("#mode-consequence")).to_contain_text(
                "Orders of this strategy will be sent to Kite with real money"
            )
            expect(page.locator("#mode-name")).to_contain_text("banknifty-straddle-intraday")
            expect(page.locator("#mode-capital")).to_have_text("₹2500000.00")
            expect(page.locator("#mode-algo-id")).to_contain_text("NSEALGO-100042")
            expect(page.locator("#mode-market-protection")).to_contain_text("3%")
            expect(page.locator("#mode-autoslice")).to_contain_text("allowed")
            expect(page.locator("#mode-limits tbody tr")).to_have_count(11)
            expect(page.locator("#limit-max_daily_loss")).to_contain_text("75000.00")
            expect(page.locator("#limit-max_daily_loss")).to_contain_text("the strategy's own")
            expect(page.locator("#limit-max_drawdown")).to_contain_text("global (OMS_MAX_DRAWDOWN)")
            page.screenshot(path=str(shots / "strategy-switch-live.png"), full_page=True)
            _fits(page, "the confirmation page")

            page.fill("#id_confirm_name", "banknifty")
            page.click("#mode-submit")
            expect(page.locator(".errorlist")).to_contain_text("type banknifty-straddle-intraday to confirm")
            page.screenshot(path=str(shots / "strategy-switch-live-wrong-name.png"), full_page=True)
            page.fill("#id_confirm_name", "banknifty-straddle-intraday")
            page.fill("#id_note", "approved by the risk committee on 1 Dec")
            page.click("#mode-submit")
            page.wait_for_url(f"**/admin/oms/strategy/{algo.pk}/change/")
            expect(page.locator(".messagelist")).to_contain_text(
                "Strategy banknifty-straddle-intraday is now LIVE"
            )
            expect(page.locator(".field-mode_shown")).to_contain_text("LIVE")
            expect(page.locator("#mode-history")).to_contain_text("approved by the risk committee")
            expect(page.locator("#strategy-switch-mode")).to_have_text("Switch to PAPER…")
            page.screenshot(path=str(shots / "strategy-live.png"), full_page=True)
            _fits(page, "the strategy page")

            page.goto(f"{base}oms/strategy/{live.pk}/mode/")
            expect(page.locator("#mode-consequence")).to_contain_text("filled by the paper broker")
            expect(page.locator("#mode-problems")).to_contain_text("1 open position at Kite")
            expect(page.locator("#mode-submit")).to_be_disabled()
            page.screenshot(path=str(shots / "strategy-switch-paper-refused.png"), full_page=True)
            _fits(page, "the refused switch")

            page.goto(f"{base}oms/freezelimit/")
            expect(page.locator("#result_list")).to_contain_text("BANKNIFTY")
            page.screenshot(path=str(shots / "freeze-limits.png"))
            _fits(page, "the freeze limits")
        finally:
            browser.close()
    algo.refresh_from_db()
    assert algo.mode == Mode.LIVE and algo.market_protection == D("3")
    change = StrategyModeChange.objects.get()
    assert change.by_username == "operator" and change.note == "approved by the risk committee on 1 Dec"


def _fits(page, what):
    """The page does not scroll sideways."""
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH, what
