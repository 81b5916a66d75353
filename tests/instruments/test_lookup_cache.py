import pytest

from instruments import selectors
from instruments.models import Instrument
from instruments.services import instrument_sync, instruments_activate
from tests.factories import InstrumentFactory
from tests.instruments.dumps import kite_csv, nifty_universe, write

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_local_layer(monkeypatch):
    # The in-process layer would hide the shared cache from these tests.
    monkeypatch.setattr(selectors, "LOCAL_TTL", 0.0)
    selectors._local.clear()


def test_lookup_fills_from_the_database_then_serves_from_the_cache(django_assert_num_queries):
    InstrumentFactory(instrument_token=738561, tradingsymbol="RELIANCE", lot_size=1)
    with django_assert_num_queries(1):
        meta = selectors.instrument_meta(738561)
    assert meta["tradingsymbol"] == "RELIANCE" and meta["tick_size"] == "0.050000"
    with django_assert_num_queries(0):
        assert selectors.instrument_meta(738561)["tradingsymbol"] == "RELIANCE"
    with django_assert_num_queries(1):  # only the unknown token goes to the database
        assert selectors.instruments_meta([738561, 42]) == {738561: meta}


def test_unknown_tokens_are_cached_as_absent(django_assert_num_queries):
    with django_assert_num_queries(1):
        assert selectors.instrument_meta(42) is None
    with django_assert_num_queries(0):
        assert selectors.instrument_meta(42) is None


def test_a_sync_invalidates_everything(tmp_path, django_capture_on_commit_callbacks):
    rows = nifty_universe()
    path = write(tmp_path / "d.csv", kite_csv(rows))
    with django_capture_on_commit_callbacks(execute=True):
        instrument_sync(source="kite", path=path)
    assert selectors.instrument_meta(738561)["lot_size"] == 1
    rows[2] = {**rows[2], "lot_size": "7"}
    write(tmp_path / "d.csv", kite_csv(rows))
    with django_capture_on_commit_callbacks(execute=True):
        instrument_sync(source="kite", path=path)
    assert selectors.instrument_meta(738561)["lot_size"] == 7


def test_an_admin_change_invalidates_its_tokens(django_capture_on_commit_callbacks):
    InstrumentFactory(instrument_token=738561)
    assert selectors.instrument_meta(738561)["is_active"] is False
    with django_capture_on_commit_callbacks(execute=True):
        instruments_activate(tokens=[738561], by="test")
    assert selectors.instrument_meta(738561)["is_active"] is True
    assert Instrument.objects.get().is_active
