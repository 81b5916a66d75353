import pytest
from django.conf import settings

from tests.helpers import free_port


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


requires_postgres = pytest.mark.skipif(
    not settings.DB_IS_POSTGRES, reason="needs PostgreSQL: set DATABASE_URL=postgres://..."
)
requires_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis: set REDIS_URL=redis://...")
