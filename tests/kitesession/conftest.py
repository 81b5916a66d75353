import pytest
from cryptography.fernet import Fernet


@pytest.fixture
def token_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def kite_settings(settings, token_key, tmp_path):
    """Kite configured with a token key, no bootstrap token."""
    settings.KITE_API_KEY = "kite-test-key"
    settings.KITE_API_SECRET = "kite-test-secret"
    settings.KITE_ACCESS_TOKEN = ""
    settings.KITE_ACCESS_TOKEN_FILE = ""
    settings.KITE_TOKEN_KEY = token_key
    return settings
