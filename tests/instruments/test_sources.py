"""Reading dumps over HTTP from a real local server (a stand-in for Kite's /instruments)."""

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import override_settings

from instruments.models import Instrument, SyncRun
from instruments.services import instrument_sync
from instruments.sync.errors import BadInput, SourceUnreachable
from tests.instruments.dumps import kite_csv, nifty_universe

pytestmark = pytest.mark.django_db
DUMP = kite_csv(nifty_universe())


class FakeKite(BaseHTTPRequestHandler):
    seen_headers: list[dict[str, str]] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        FakeKite.seen_headers.append(dict(self.headers))
        routes = {
            "/instruments": (200, DUMP, {}),
            "/instruments.gz": (200, gzip.compress(DUMP), {}),
            "/instruments-encoded": (200, gzip.compress(DUMP), {"Content-Encoding": "gzip"}),
            "/instruments/NFO": (200, kite_csv([r for r in nifty_universe() if r["exchange"] == "NFO"]), {}),
            "/broken": (500, b"<html>Internal Server Error</html>", {}),
            "/login": (200, b"<!DOCTYPE html><html><body>Login</body></html>", {}),
            "/truncated": (200, gzip.compress(DUMP)[:-50], {}),
        }
        status, body, headers = routes.get(self.path.split("?")[0], (404, b"not found", {}))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_kite():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKite)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    FakeKite.seen_headers = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/instruments", "/instruments.gz", "/instruments-encoded"])
def test_plain_gzipped_and_transfer_encoded_dumps(fake_kite, path):
    report = instrument_sync(source="kite", url=fake_kite + path)
    assert report.inserted == len(nifty_universe())


def test_default_url_sends_kite_credentials_only_to_kite(fake_kite):
    with override_settings(KITE_INSTRUMENTS_URL=fake_kite + "/instruments", KITE_API_KEY="key123",
                           KITE_ACCESS_TOKEN="token456"):  # fmt: skip
        instrument_sync(source="kite")
        instrument_sync(source="kite", url="http://localhost:" + fake_kite.rsplit(":", 1)[1] + "/instruments")
    kite_call, other_call = FakeKite.seen_headers
    assert kite_call["Authorization"] == "token key123:token456"
    assert "Authorization" not in other_call
    assert SyncRun.objects.first().input.endswith("/instruments")


def test_an_exchange_dump_over_http(fake_kite):
    instrument_sync(source="kite", url=fake_kite + "/instruments")
    report = instrument_sync(source="kite", url=fake_kite + "/instruments/NFO")
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
        instrument_sync(source="kite", url=fake_kite + path)
    assert not Instrument.objects.exists()
