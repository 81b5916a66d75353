"""Reading dumps over HTTP from a real local server (a stand-in for Kite's /instruments)."""

import gzip
import json

import pytest
from django.test import override_settings

from instruments.models import Instrument, SyncRun
from instruments.services import instrument_sync
from instruments.sync.errors import BadInput, SourceUnreachable
from instruments.sync.policy import kite_credentials_allowed
from tests.instruments.dumps import kite_csv, nifty_universe
from tests.instruments.fake_http import Route, fake_server

pytestmark = pytest.mark.django_db
DUMP = kite_csv(nifty_universe())
CREDENTIALS = {"KITE_API_KEY": "key123", "KITE_ACCESS_TOKEN": "token456"}


@pytest.fixture
def fake_kite():
    routes = {
        "/instruments": DUMP,
        "/instruments.gz": gzip.compress(DUMP),
        "/instruments-encoded": Route(gzip.compress(DUMP), headers={"Content-Encoding": "gzip"}),
        "/instruments/NFO": kite_csv([r for r in nifty_universe() if r["exchange"] == "NFO"]),
        "/broken": Route(b"<html>Internal Server Error</html>", status=500),
        "/login": b"<!DOCTYPE html><html><body>Login</body></html>",
        "/truncated": gzip.compress(DUMP)[:-50],
    }
    with fake_server(routes) as server:
        yield server


@pytest.mark.parametrize("path", ["/instruments", "/instruments.gz", "/instruments-encoded"])
def test_plain_gzipped_and_transfer_encoded_dumps(fake_kite, path):
    report = instrument_sync(source="kite", url=fake_kite.url(path))
    assert report.inserted == len(nifty_universe())


def test_credentials_go_to_the_configured_kite_origin_and_nowhere_else(fake_kite):
    configured = fake_kite.url("/instruments")
    other_name = f"http://localhost:{fake_kite.port}/instruments"  # same server, another origin
    with override_settings(KITE_INSTRUMENTS_URL=configured, **CREDENTIALS):
        instrument_sync(source="kite")
        instrument_sync(source="kite", url=other_name)
    kite_call, other_call = fake_kite.seen
    assert kite_call.headers["Authorization"] == "token key123:token456"
    assert kite_call.headers["X-Kite-Version"] == "3"
    assert "Authorization" not in other_call.headers
    # Each run records the URL it read, as given (no credentials in either).
    inputs = list(SyncRun.objects.order_by("id").values_list("input", flat=True))
    assert inputs == [configured, other_name]


def test_credentials_never_go_over_plain_http_to_an_https_kite_origin(fake_kite):
    """The same host and port as the configured https origin, but plain http: the token
    would cross the network in clear text, so no Authorization header is sent."""
    with override_settings(KITE_INSTRUMENTS_URL=f"https://127.0.0.1:{fake_kite.port}/instruments",
                           KITE_API_URL=f"https://127.0.0.1:{fake_kite.port}", **CREDENTIALS):  # fmt: skip
        instrument_sync(source="kite", url=fake_kite.url("/instruments"))
    (call,) = fake_kite.seen
    assert "Authorization" not in call.headers


def test_the_kite_api_origin_also_gets_credentials(fake_kite):
    with override_settings(KITE_API_URL=fake_kite.base, **CREDENTIALS):
        instrument_sync(source="kite", url=fake_kite.url("/instruments/NFO"))
    assert fake_kite.seen[0].headers["Authorization"] == "token key123:token456"


def test_upstox_dumps_never_get_kite_credentials(fake_kite):
    from tests.instruments.test_parsing import UPSTOX_RECORDS

    fake_kite.routes["/complete.json"] = Route(json.dumps(UPSTOX_RECORDS).encode())
    with override_settings(KITE_INSTRUMENTS_URL=fake_kite.url("/instruments"), **CREDENTIALS):
        instrument_sync(source="upstox", url=fake_kite.url("/complete.json"))
    assert "Authorization" not in fake_kite.seen[0].headers


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.kite.trade/instruments", True),
        ("https://API.KITE.TRADE:443/instruments/NFO", True),
        ("https://api.kite.trade./instruments", True),
        ("http://api.kite.trade/instruments", False),
        ("http://api.kite.trade:443/instruments", False),
        ("https://api.kite.trade:8443/instruments", False),
        ("https://api.kite.trade.evil.example/instruments", False),
        ("https://evil.example/instruments", False),
        ("ftp://api.kite.trade/instruments", False),
        ("https://[::1/instruments", False),
    ],
)
def test_which_origins_may_get_kite_credentials(url, allowed):
    with override_settings(KITE_INSTRUMENTS_URL="https://api.kite.trade/instruments",
                           KITE_API_URL="https://api.kite.trade"):  # fmt: skip
        assert kite_credentials_allowed(url) is allowed


def test_a_configured_plain_http_origin_gets_credentials_only_on_loopback():
    with override_settings(KITE_INSTRUMENTS_URL="http://api.kite.trade/instruments", KITE_API_URL="http://x"):
        assert not kite_credentials_allowed("http://api.kite.trade/instruments")
    with override_settings(KITE_INSTRUMENTS_URL="http://127.0.0.1:9/instruments", KITE_API_URL="http://x"):
        assert kite_credentials_allowed("http://127.0.0.1:9/instruments/NSE")


def test_a_redirect_is_followed_without_carrying_credentials_elsewhere(fake_kite):
    with fake_server({"/dump.csv": DUMP}) as elsewhere:
        fake_kite.routes["/moved"] = Route(status=302, headers={"Location": elsewhere.url("/dump.csv")})
        with override_settings(KITE_INSTRUMENTS_URL=fake_kite.url("/instruments"), **CREDENTIALS):
            report = instrument_sync(source="kite", url=fake_kite.url("/moved"))
        assert report.inserted == len(nifty_universe())
        assert fake_kite.seen[0].headers["Authorization"] == "token key123:token456"
        assert "Authorization" not in elsewhere.seen[0].headers


def test_a_redirect_loop_is_cut_short(fake_kite):
    fake_kite.routes["/loop"] = Route(status=302, headers={"Location": "/loop"})
    with pytest.raises(SourceUnreachable, match="more than 5 redirects"):
        instrument_sync(source="kite", url=fake_kite.url("/loop"))
    assert fake_kite.paths() == ["/loop"] * 6


def test_an_exchange_dump_over_http(fake_kite):
    instrument_sync(source="kite", url=fake_kite.url("/instruments"))
    report = instrument_sync(source="kite", url=fake_kite.url("/instruments/NFO"))
    assert report.scope == ["NFO"] and report.delisted == 0


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("/broken", SourceUnreachable, "HTTP 500"),
        ("/missing", SourceUnreachable, "HTTP 404"),
        ("/login", BadInput, "HTML"),
        ("/truncated", BadInput, "truncated"),
    ],
)
def test_http_failures_change_nothing(fake_kite, path, error, message):
    with pytest.raises(error, match=message):
        instrument_sync(source="kite", url=fake_kite.url(path))
    assert not Instrument.objects.exists()
