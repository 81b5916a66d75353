import pytest

from oms.models import Strategy
from tests.factories import InstrumentFactory


@pytest.fixture
def manual():
    return Strategy.objects.get(name="manual")


@pytest.fixture
def reliance(db):
    return InstrumentFactory(tradingsymbol="RELIANCE", name="RELIANCE INDUSTRIES", instrument_token=738561,
                             exchange="NSE", segment="NSE", tick_size="0.05", lot_size=1, is_active=True)  # fmt: skip


@pytest.fixture
def trader(django_user_model):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(username="strategist", password="strategist-pass-123")
    user.user_permissions.add(Permission.objects.get(codename="place_order"))
    return user
