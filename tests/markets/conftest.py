import pytest

from markets.calendar import calendar_forget_here


@pytest.fixture(autouse=True)
def _fresh_calendar():
    """Each test's holidays (rolled back after it) never linger in the process's copy."""
    calendar_forget_here()
    yield
    calendar_forget_here()
