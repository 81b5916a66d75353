"""Lock files (the SQLite arrangement) live under var/locks/, ignored by git, one folder
per database; never in a locks/ folder at the repository root."""

import subprocess
from pathlib import Path

import pytest
from django.db import connection

from tradingportal.locks import LockHeld, lock_file, named_lock


@pytest.fixture
def database():
    """Point the lock at a SQLite file of our choosing (the lock never opens it)."""
    name = connection.settings_dict["NAME"]

    def use(path: Path) -> None:
        connection.settings_dict["NAME"] = str(path)

    yield use
    connection.settings_dict["NAME"] = name


def test_the_default_database_locks_under_var_locks_ignored_by_git(database, settings):
    base = Path(settings.BASE_DIR)
    database(base / "db.sqlite3")  # the embedded default, beside manage.py
    path = lock_file("c2-test-lock")
    path.touch()
    assert path.parent.parent == base / "var" / "locks"  # not <repo>/locks/
    ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=base, check=False)
    assert ignored.returncode == 0, f"{path} is not ignored by git"


def test_two_databases_never_share_a_lock_file(database, settings):
    database(Path(settings.BASE_DIR) / "var" / "one.sqlite3")
    one = lock_file("instrument-sync")
    database(Path(settings.BASE_DIR) / "var" / "another.sqlite3")
    another = lock_file("instrument-sync")
    assert one != another and one.name == another.name == "instrument-sync.lock"
    database(Path(settings.BASE_DIR) / "var" / "." / "one.sqlite3")
    assert lock_file("instrument-sync") == one  # the same file however it is spelt


@pytest.mark.django_db
def test_a_held_lock_refuses_a_second_taker_and_is_released():
    if connection.vendor != "sqlite":
        pytest.skip(
            "file locks are the SQLite arrangement (tests/instruments/test_lock.py covers PostgreSQL)"
        )
    with named_lock("c2-test-lock"), pytest.raises(LockHeld), named_lock("c2-test-lock"):
        pass
    with named_lock("c2-test-lock"):  # released: taken again
        pass
