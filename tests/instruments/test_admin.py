"""The admin as an operator uses it: a logged-in staff user, through the admin's own views."""

from datetime import date

import pytest
from django.test import override_settings
from django.urls import reverse

from instruments.models import Instrument
from tests.factories import InstrumentFactory, NiftyOptionFactory

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/instruments/instrument/"


def changelist_post(instruments, changes=None):
    """The POST the changelist's Save button sends, with ``changes`` = {pk: {field: value}}."""
    data = {
        "form-TOTAL_FORMS": str(len(instruments)),
        "form-INITIAL_FORMS": str(len(instruments)),
        "form-MIN_NUM_FORMS": "0",
        "form-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    for i, instrument in enumerate(instruments):
        fields = {"is_active": instrument.is_active, "stream_mode": instrument.stream_mode}
        fields.update((changes or {}).get(instrument.pk, {}))
        data[f"form-{i}-id"] = str(instrument.pk)
        data[f"form-{i}-stream_mode"] = fields["stream_mode"]
        if fields["is_active"]:
            data[f"form-{i}-is_active"] = "on"
    return data


def test_changelist_shows_active_count_against_the_limit(staff_client, django_assert_max_num_queries):
    InstrumentFactory.create_batch(30)
    InstrumentFactory(is_active=True)
    with django_assert_max_num_queries(15):
        response = staff_client.get(CHANGELIST)
    assert response.status_code == 200
    page = response.content.decode()
    assert "<strong>1</strong> of <strong>9000</strong> instruments active" in page
    assert 'name="form-0-is_active"' in page  # the editable checkbox


def test_changelist_query_count_does_not_grow_with_rows(staff_client, django_assert_max_num_queries):
    InstrumentFactory.create_batch(5)
    with django_assert_max_num_queries(15) as few:
        staff_client.get(CHANGELIST)
    InstrumentFactory.create_batch(80)
    with django_assert_max_num_queries(len(few.captured_queries)):
        staff_client.get(CHANGELIST)


def test_search_and_filters(staff_client):
    InstrumentFactory(tradingsymbol="RELIANCE", name="RELIANCE INDUSTRIES")
    InstrumentFactory(tradingsymbol="TCS", name="TATA CONSULTANCY")
    NiftyOptionFactory()
    response = staff_client.get(CHANGELIST, {"q": "tata"})
    assert "TCS" in response.content.decode() and "RELIANCE" not in response.content.decode()
    response = staff_client.get(
        CHANGELIST, {"exchange": "NFO", "expiry_state": "upcoming", "listing": "listed"}
    )
    assert response.status_code == 200
    assert "NIFTY99DEC" in response.content.decode() and "TCS" not in response.content.decode()


def test_tick_is_active_in_the_list_and_save(staff_client):
    instruments = InstrumentFactory.create_batch(3)
    response = staff_client.post(
        CHANGELIST, changelist_post(instruments, {instruments[1].pk: {"is_active": True}})
    )
    assert response.status_code == 302
    assert list(Instrument.objects.filter(is_active=True)) == [instruments[1]]


@override_settings(KITE_TICKER_MAX_CONNECTIONS=1, KITE_TICKER_MAX_PER_CONNECTION=2)
def test_list_edit_past_the_limit_is_refused(staff_client):
    instruments = InstrumentFactory.create_batch(3)
    changes = {i.pk: {"is_active": True} for i in instruments}
    response = staff_client.post(CHANGELIST, changelist_post(instruments, changes))
    assert response.status_code == 200
    assert "would exceed the feed&#x27;s limit of 2" in response.content.decode()
    assert not Instrument.objects.filter(is_active=True).exists()


def test_delisted_cannot_be_activated_from_the_list(staff_client):
    gone = InstrumentFactory(is_listed=False)
    response = staff_client.post(CHANGELIST, changelist_post([gone], {gone.pk: {"is_active": True}}))
    assert response.status_code == 200
    assert "Delisted instruments cannot stream" in response.content.decode()
    gone.refresh_from_db()
    assert not gone.is_active


def test_actions_activate_and_deactivate(staff_client):
    instruments = InstrumentFactory.create_batch(4)
    ids = [str(i.pk) for i in instruments[:3]]
    response = staff_client.post(
        CHANGELIST, {"action": "activate_selected", "_selected_action": ids}, follow=True
    )
    assert "3 instruments activated" in response.content.decode()
    assert Instrument.objects.filter(is_active=True).count() == 3
    response = staff_client.post(
        CHANGELIST, {"action": "deactivate_selected", "_selected_action": ids[:1]}, follow=True
    )
    assert "1 instruments deactivated" in response.content.decode()
    assert Instrument.objects.filter(is_active=True).count() == 2


@override_settings(KITE_TICKER_MAX_CONNECTIONS=1, KITE_TICKER_MAX_PER_CONNECTION=2)
def test_action_past_the_limit_is_refused_with_a_clear_message(staff_client):
    instruments = InstrumentFactory.create_batch(3)
    ids = [str(i.pk) for i in instruments]
    response = staff_client.post(
        CHANGELIST, {"action": "activate_selected", "_selected_action": ids}, follow=True
    )
    assert (
        "Refused: 3 active instruments would exceed the feed&#x27;s limit of 2" in response.content.decode()
    )
    assert not Instrument.objects.filter(is_active=True).exists()


def test_activating_an_expired_instrument_warns(staff_client):
    old = NiftyOptionFactory(expiry=date(2020, 1, 30))
    response = staff_client.post(
        CHANGELIST, {"action": "activate_selected", "_selected_action": [old.pk]}, follow=True
    )
    assert "already expired" in response.content.decode()


def test_syncrun_admin_is_read_only_and_can_queue_a_sync(staff_client, django_capture_on_commit_callbacks):
    from django_q.brokers import get_broker

    response = staff_client.get("/admin/instruments/syncrun/")
    assert response.status_code == 200 and "Start a sync" in response.content.decode()
    assert staff_client.get("/admin/instruments/syncrun/add/").status_code == 403
    broker = get_broker()
    broker.purge_queue()
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            reverse("admin:instruments_syncrun_start"), {"source": "kite", "preset": "nifty"}, follow=True
        )
    assert "Sync queued" in response.content.decode()
    assert broker.queue_size() == 1
    broker.purge_queue()


def test_search_ranks_the_exact_match_first_and_takes_any_input(staff_client):
    for symbol, name in (
        ("ANIFTY", "AXIS NIFTY 50 ETF"),
        ("BNIFTY", "BIRLA NIFTY 50 ETF"),
        ("NIFTY 50", "NIFTY 50"),
    ):
        InstrumentFactory(tradingsymbol=symbol, name=name)
    page = staff_client.get(CHANGELIST, {"q": "Nifty 50"}).content.decode()
    positions = [page.index(f">{symbol}</a>") for symbol in ("NIFTY 50", "ANIFTY", "BNIFTY")]
    assert positions == sorted(positions)
    # A clicked column still orders the list (column 1 is the symbol).
    page = staff_client.get(CHANGELIST, {"q": "Nifty 50", "o": "1"}).content.decode()
    assert page.index(">ANIFTY</a>") < page.index(">NIFTY 50</a>")
    for term in ("²", "1" * 5000, str(2**64)):
        assert staff_client.get(CHANGELIST, {"q": term}).status_code == 200
    assert staff_client.get(CHANGELIST, {"q": "NIFTY\x00"}).status_code == 400
    assert staff_client.get(CHANGELIST, {"exchange__exact": "N\x00SE"}).status_code == 400


def test_the_list_leads_with_what_an_operator_acts_on(staff_client):
    NiftyOptionFactory(tradingsymbol="NIFTY99DEC24050.5CE", strike="24050.5")
    InstrumentFactory(tradingsymbol="RELIANCE")
    page = staff_client.get(CHANGELIST).content.decode()
    headers = [h for h in ("column-tradingsymbol", "column-is_active", "column-stream_mode") if h in page]
    assert headers == ["column-tradingsymbol", "column-is_active", "column-stream_mode"]
    assert (
        page.index("column-tradingsymbol") < page.index("column-is_active") < page.index("column-stream_mode")
    )
    assert "column-tick_size" not in page and "column-segment" not in page
    assert ">24050.5<" in page and "0.0000" not in page  # an equity's strike is blank


def test_non_staff_cannot_reach_the_admin(client, plain_user):
    client.force_login(plain_user)
    assert client.get(CHANGELIST).status_code == 302
