"""Sample tests for tests/tradingportal/test_markers.py (not collected by itself: its name
does not start with ``test_``). Each needs a service, by one of the ways a test can say so."""

import pytest

from tests.conftest import requires_postgres, requires_redis


@requires_postgres
def test_needs_postgres():
    pass


@pytest.mark.redis
def test_needs_redis():
    pass


@pytest.mark.postgres
@requires_redis
def test_needs_both():
    pass


@pytest.mark.browser
def test_marked_browser():
    pass


def test_uses_the_chromium_fixture(chromium):
    assert chromium


def test_needs_nothing():
    pass
