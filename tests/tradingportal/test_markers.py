"""The postgres/redis/browser markers skip tests whose service is not configured, with the
reason shown, and the run ends with a one-line count of what was skipped for lack of each."""

import os
import subprocess
import sys

from tests.helpers import BASE_DIR

SAMPLES = "tests/tradingportal/marker_samples.py"


def run_samples(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CHROMIUM_PATH")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-rs", SAMPLES, *args],
        cwd=BASE_DIR,
        env={**base, "ENV_FILE": "/dev/null", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def summary(output: str) -> str:
    lines = [
        line for line in output.splitlines() if line.startswith(("skipped for lack of", "nothing skipped"))
    ]
    assert len(lines) == 1, output
    return lines[0]


def test_without_any_service_everything_that_needs_one_is_skipped_and_counted(tmp_path):
    # No PostgreSQL, no Redis, and a PATH without a chromium.
    result = run_samples(PATH=str(tmp_path))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "1 passed, 5 skipped" in out
    assert summary(out) == "skipped for lack of: PostgreSQL 2, Redis 2, Chromium 2"
    assert "needs PostgreSQL: set DATABASE_URL=postgres://..." in out
    assert "needs Redis: set REDIS_URL=redis://..." in out
    assert "needs Chromium: apt-get install chromium" in out


def test_a_service_that_is_there_runs_its_tests(tmp_path):
    chromium = tmp_path / "chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    result = run_samples(CHROMIUM_PATH=str(chromium))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "3 passed, 3 skipped" in out
    assert summary(out) == "skipped for lack of: PostgreSQL 2, Redis 2"


def test_browser_tests_can_be_left_out_by_marker(tmp_path):
    """Also those that only ask for the ``chromium`` fixture."""
    result = run_samples("-m", "not browser", PATH=str(tmp_path))
    assert "1 passed, 3 skipped, 2 deselected" in result.stdout, result.stdout + result.stderr
