import secrets

from tests.helpers import manage
from tests.tradingportal.test_settings import clean_env


def test_check_deploy_is_clean_with_production_like_settings():
    env = clean_env(
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="0",
        ALLOWED_HOSTS="desk.example.com",
        CSRF_TRUSTED_ORIGINS="https://desk.example.com",
    )
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_flags_plain_http_in_production():
    env = clean_env(SECRET_KEY=secrets.token_urlsafe(50), DEBUG="0", HTTPS="0")
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0
    assert "SESSION_COOKIE_SECURE" in result.stdout + result.stderr
