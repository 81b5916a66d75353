import os
import shutil
from collections import Counter

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
LACKING = pytest.StashKey[list[str]]()  # the services an item was skipped for lack of


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
                item.stash.setdefault(LACKING, []).append(service)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Reports say what their test lacked: under pytest-xdist the workers collect and run the
    tests, and only their reports reach the process that writes the summary."""
    report = yield
    report.lacking_services = item.stash.get(LACKING, [])
    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lacking = {
        report.nodeid: getattr(report, "lacking_services", [])
        for report in terminalreporter.stats.get("skipped", [])
    }
    counts = Counter(service for services in lacking.values() for service in services)
    parts = [f"{service} {counts[service]}" for service, _, _ in SERVICES.values() if counts[service]]
    terminalreporter.write_line(
        f"skipped for lack of: {', '.join(parts)}"
        if parts
        else "nothing skipped for lack of PostgreSQL, Redis or Chromium"
    )


# --- parallel runs (pytest-xdist; tests/settings.py gives each worker its own state) -------------
def pytest_configure(config):
    """Under pytest-xdist, in the process that starts the workers. Worker gw<N> uses Redis
    database REDIS_URL's number + N: a Redis without that many databases stops the run at
    once, saying what to change, instead of failing every test."""
    from tests.settings import OWN_WORKER_CACHE_DIR, worker_redis_url

    workers = len(config.option.tx or []) if config.getoption("dist", "no") != "no" else 0
    if not workers or hasattr(config, "workerinput"):
        return
    # This process only hands tests out: each worker it starts chooses its own folder.
    if os.environ.get("WORKER_CACHE_DIR") == OWN_WORKER_CACHE_DIR:
        del os.environ["WORKER_CACHE_DIR"]
    if workers < 2 or not settings.REDIS_URL:
        return
    import redis
    from redis.connection import parse_url

    last = worker_redis_url(settings.REDIS_URL, f"gw{workers - 1}")
    try:
        with redis.Redis.from_url(last, socket_connect_timeout=2, socket_timeout=2) as client:
            client.ping()
    except redis.ResponseError as exc:
        raise pytest.UsageError(
            f"{workers} test workers need Redis databases up to {parse_url(last)['db']} "
            f"(REDIS_URL's number + the worker's), and this Redis says: {exc}. Use a lower database "
            "number in REDIS_URL, fewer workers (make test PYTEST_WORKERS=...), or more `databases` in redis.conf."
        ) from None
    except redis.RedisError:
        pass  # not reachable: the tests that need Redis fail and say so


def pytest_sessionfinish(session, exitstatus):
    """Remove this process's worker cache folder (tests/settings.py names it after the process)."""
    from tests.settings import OWN_WORKER_CACHE_DIR

    if os.environ.get("WORKER_CACHE_DIR") == OWN_WORKER_CACHE_DIR:
        shutil.rmtree(OWN_WORKER_CACHE_DIR, ignore_errors=True)
