import pytest

from instruments import selectors
from instruments.models import Instrument
from instruments.services import instrument_sync, instruments_activate
from tests.factories import InstrumentFactory
from tests.instruments.dumps import kite_csv, nifty_universe, write

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_local_layer(monkeypatch):
    # Most tests here look at the shared cache, which the in-process layer would hide;
    # the tests of that layer set LOCAL_TTL back on.
    monkeypatch.setattr(selectors, "LOCAL_TTL", 0.0)
    selectors._local.clear()
    yield
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


class CountingCache:
    """The real cache, counting the calls that reach it."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def __getattr__(self, name):
        attribute = getattr(self.real, name)
        if callable(attribute):

            def counted(*args, **kwargs):
                self.calls += 1
                return attribute(*args, **kwargs)

            return counted
        return attribute


def test_the_in_process_layer_answers_repeated_lookups_and_sees_invalidations(
    monkeypatch, django_assert_num_queries, django_capture_on_commit_callbacks
):
    """With the in-process layer on (LOCAL_TTL as shipped), a second lookup within
    LOCAL_TTL makes no cache and no database round trip, and an invalidation is seen."""
    monkeypatch.setattr(selectors, "LOCAL_TTL", 3600.0)
    counting = CountingCache(selectors.cache)
    monkeypatch.setattr(selectors, "cache", counting)
    InstrumentFactory(instrument_token=738561, tradingsymbol="RELIANCE")
    assert selectors.instrument_meta(738561)["is_active"] is False
    calls = counting.calls
    with django_assert_num_queries(0):
        for _ in range(3):
            assert selectors.instruments_meta([738561])[738561]["tradingsymbol"] == "RELIANCE"
    assert counting.calls == calls  # not even the shared cache was asked
    with django_capture_on_commit_callbacks(execute=True):
        instruments_activate(tokens=[738561], by="test")
    assert selectors.instrument_meta(738561)["is_active"] is True  # the layer forgot the token
    Instrument.objects.update(tradingsymbol="RELIANCE2")
    selectors.instrument_cache_invalidate()  # what a sync does
    assert selectors.instrument_meta(738561)["tradingsymbol"] == "RELIANCE2"


def test_the_in_process_layer_expires_after_local_ttl(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(selectors, "LOCAL_TTL", 2.0)
    monkeypatch.setattr(selectors.time, "monotonic", lambda: clock[0])
    InstrumentFactory(instrument_token=738561, tradingsymbol="RELIANCE")
    selectors.instrument_meta(738561)
    # Changed behind the cache's back (no invalidation): the layer keeps the old value
    # within LOCAL_TTL, then asks the shared cache again.
    selectors.cache.clear()
    Instrument.objects.update(tradingsymbol="CHANGED")
    clock[0] += 1.9
    assert selectors.instrument_meta(738561)["tradingsymbol"] == "RELIANCE"
    clock[0] += 0.2
    assert selectors.instrument_meta(738561)["tradingsymbol"] == "CHANGED"
