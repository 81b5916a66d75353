import pytest
from django.conf import settings

from tests.helpers import chromium_path, free_port


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        username="operator", password="operator-pass-123", is_staff=True, is_superuser=True
    )


@pytest.fixture
def plain_user(django_user_model):
    return django_user_model.objects.create_user(username="trader", password="trader-pass-123")


@pytest.fixture
def staff_client(client, staff_user):
    """The test client, logged in as a staff user (the operator)."""
    client.force_login(staff_user)
    return client


@pytest.fixture
def trader_client(client, plain_user):
    """The test client, logged in as a non-staff user (a trader)."""
    client.force_login(plain_user)
    return client


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    cache.clear()
    yield


# Tests that need a service say so with a marker; the hooks below skip them (with the
# reason shown) when the service is not configured, and the run ends with a one-line
# count of what was skipped for lack of each.
requires_postgres = pytest.mark.postgres
requires_redis = pytest.mark.redis

# marker: (service, available, reason)
SERVICES = {
    "postgres": ("PostgreSQL", lambda: settings.DB_IS_POSTGRES, "needs PostgreSQL: set DATABASE_URL=postgres://..."),
    "redis": ("Redis", lambda: bool(settings.REDIS_URL), "needs Redis: set REDIS_URL=redis://..."),
    "browser": ("Chromium", lambda: bool(chromium_path()), "needs Chromium: apt-get install chromium (.ci/run does)"),
}  # fmt: skip
_lacking: dict[str, set[str]] = {service: set() for service, _, _ in SERVICES.values()}


@pytest.fixture
def chromium() -> str:
    """The Chromium executable; a test using it is marked ``browser`` (skipped without one)."""
    path = chromium_path()
    assert path, "the browser marker should have skipped this test"
    return path


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "chromium" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
        for marker, (service, available, reason) in SERVICES.items():
            if item.get_closest_marker(marker) and not available():
                item.add_marker(pytest.mark.skip(reason=reason))
                _lacking[service].add(item.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = {report.nodeid for report in terminalreporter.stats.get("skipped", [])}
    counts = {service: len(nodeids & skipped) for service, nodeids in _lacking.items()}
    parts = [f"{service} {count}" for service, count in counts.items() if count]
    terminalreporter.write_line(
        f"skipped for lack of: {', '.join(parts)}"
        if parts
        else "nothing skipped for lack of PostgreSQL, Redis or Chromium"
    )
