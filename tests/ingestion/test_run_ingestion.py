"""``manage.py run_ingestion`` as an operator runs it."""

from tests.helpers import manage, portal_env


def test_without_kite_credentials_it_exits_1_and_says_what_to_set(tmp_path):
    env = portal_env(redis=False, ENV_FILE=str(tmp_path / "no.env"), KITE_API_KEY="", KITE_ACCESS_TOKEN="",
                     KITE_ACCESS_TOKEN_FILE="", INGESTION_SIMULATE="0")  # fmt: skip
    result = manage("run_ingestion", env=env, timeout=60)
    assert result.returncode == 1
    assert "No Kite credentials" in result.stderr
    assert "KITE_ACCESS_TOKEN" in result.stderr and "--simulate" in result.stderr


def test_with_a_key_but_no_token_it_still_refuses(tmp_path):
    env = portal_env(redis=False, ENV_FILE=str(tmp_path / "no.env"), KITE_API_KEY="kite-key-123",
                     KITE_ACCESS_TOKEN="", KITE_ACCESS_TOKEN_FILE="", INGESTION_SIMULATE="0")  # fmt: skip
    result = manage("run_ingestion", env=env, timeout=60)
    assert result.returncode == 1 and "No Kite credentials" in result.stderr
    assert "kite-key-123" not in result.stderr + result.stdout
