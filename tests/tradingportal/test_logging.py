"""The portal's logging: a repeated failure logged once then rarely, plain lines on a terminal
and JSON elsewhere, uvicorn's own lines redacted and formatted, the heartbeat kept quiet."""

import json
import logging
import os
import pty
import subprocess
import sys
import urllib.error
import urllib.request

from tests.helpers import BASE_DIR, free_port, port_open, running, wait_for
from tradingportal.logging import QuietHeartbeat, RepeatedFailure
from tradingportal.worker import HEARTBEAT_FUNC


def test_a_repeated_failure_is_logged_once_then_at_most_every_interval(caplog):
    log = logging.getLogger("tests.repeated")
    failure = RepeatedFailure(log, "storing ticks", every=3600)
    with caplog.at_level(logging.INFO, logger="tests.repeated"):
        for _ in range(500):
            try:
                raise ConnectionError("Redis is away")
            except ConnectionError as exc:
                failure.failed(exc)
        failure.succeeded()
    lines = [r for r in caplog.records if r.name == "tests.repeated"]
    assert [r.getMessage() for r in lines] == [
        "storing ticks failed",
        "storing ticks works again after 500 failures",
    ]
    assert lines[0].exc_info or lines[0].exc_text  # the first one carries the traceback
    assert failure.count == 0 and failure.total == 500


def test_a_long_failure_reports_its_count_each_interval(caplog):
    log = logging.getLogger("tests.repeated")
    failure = RepeatedFailure(log, "publishing", every=0)
    with caplog.at_level(logging.INFO, logger="tests.repeated"):
        failure.failed(RuntimeError("one"))
        failure.failed(RuntimeError("two"))
    assert "publishing still failing (2 times so far): RuntimeError: two" in caplog.text


SNIPPET = "import django, logging; django.setup(); logging.getLogger('tests.tty').warning('hello, desk')"


def plain_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("LOG_FORMAT", "DEBUG", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="tradingportal.settings", HTTPS="0", PYTHONUNBUFFERED="1",
               SECRET_KEY="logging-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")  # fmt: skip
    env.update(extra)
    return env


def test_commands_log_plain_lines_to_a_terminal_and_json_elsewhere(tmp_path):
    controller, terminal = pty.openpty()
    try:
        subprocess.run([sys.executable, "-c", SNIPPET], cwd=BASE_DIR, env=plain_env(), stderr=terminal,
                       stdout=subprocess.DEVNULL, check=True, timeout=60)  # fmt: skip
        os.close(terminal)
        terminal = -1
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other side is closed: all read
                break
            if not chunk:
                break
            chunks.append(chunk)
        on_terminal = b"".join(chunks).decode()
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    line = next(line for line in on_terminal.splitlines() if "hello, desk" in line)
    assert "WARNING" in line and "tests.tty: hello, desk" in line and not line.startswith("{")

    to_file = subprocess.run([sys.executable, "-c", SNIPPET], cwd=BASE_DIR, env=plain_env(), capture_output=True,
                             text=True, check=True, timeout=60)  # fmt: skip
    record = json.loads(next(line for line in to_file.stderr.splitlines() if "hello, desk" in line))
    assert record["level"] == "WARNING" and record["logger"] == "tests.tty" and record["msg"] == "hello, desk"

    chosen = subprocess.run([sys.executable, "-c", SNIPPET], cwd=BASE_DIR, env=plain_env(LOG_FORMAT="text"),
                            capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    assert "tests.tty: hello, desk" in chosen.stderr and '"msg"' not in chosen.stderr


def test_a_bad_log_format_is_refused_with_the_choices():
    result = subprocess.run([sys.executable, "-c", SNIPPET], cwd=BASE_DIR, env=plain_env(LOG_FORMAT="yaml"),
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert "LOG_FORMAT='yaml': use json, text or auto" in result.stderr


def _access_lines(log_path, *, extra_argv=(), **env):
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "tradingportal.asgi:application", "--host", "127.0.0.1",
            "--port", str(port), *extra_argv]  # fmt: skip
    with running(argv, plain_env(**env), log_path):
        wait_for(lambda: port_open(port), timeout=60, what="uvicorn to listen")
        for path in ("/x?access_token=SOMETHING-SECRET&page=2", "/y?marker=done"):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10)
            except urllib.error.HTTPError as exc:
                assert exc.code == 404
    # Stopped: everything it logged is in the file.
    return [line for line in log_path.read_text().splitlines() if "/x?" in line or "/y?" in line]


def test_uvicorns_access_lines_are_redacted_and_json(tmp_path):
    lines = _access_lines(tmp_path / "uvicorn.log", LOG_FORMAT="json")
    assert lines, "no access line was written"
    assert all("SOMETHING-SECRET" not in line for line in lines)
    records = [json.loads(line) for line in lines]
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert any("GET /x?access_token=********&page=2 HTTP/1.1" in r["msg"] for r in access)
    started = [json.loads(line) for line in (tmp_path / "uvicorn.log").read_text().splitlines()
               if "Application startup complete" in line]  # fmt: skip
    assert started and started[0]["logger"] == "uvicorn.error"  # uvicorn's own lines are the portal's too


def test_uvicorns_access_lines_in_text_format_are_redacted(tmp_path):
    lines = _access_lines(tmp_path / "uvicorn.log", LOG_FORMAT="text")
    access = [line for line in lines if "uvicorn.access" in line]
    assert access and all("SOMETHING-SECRET" not in line for line in lines)
    assert "access_token=********" in access[0] and not access[0].startswith("{")


def test_uvicorn_told_not_to_log_access_stays_quiet(tmp_path):
    lines = _access_lines(tmp_path / "uvicorn.log", extra_argv=("--no-access-log",), LOG_FORMAT="json")
    assert not [line for line in lines if "uvicorn.access" in line]


def test_the_heartbeats_per_task_lines_are_dropped_and_nothing_else():
    quiet = QuietHeartbeat()

    def record(message, level=logging.INFO):
        return logging.LogRecord("django-q", level, __file__, 1, message, None, None)

    assert not quiet.filter(record(f"Process-1 processing worker heartbeat '{HEARTBEAT_FUNC}'"))
    assert not quiet.filter(record(f"Processed '{HEARTBEAT_FUNC}' (worker heartbeat)"))
    assert quiet.filter(record("Processed 'instruments.tasks.sync_instruments_task' (sync kite by desk)"))
    assert quiet.filter(record(f"Failed '{HEARTBEAT_FUNC}' - boom", logging.ERROR))


def test_json_extras_that_are_objects_are_redacted_too(settings):
    from tradingportal.logging import JsonFormatter

    class Request:
        def __repr__(self):
            return "<ASGIRequest: GET '/x?access_token=SOMETHING-SECRET'>"

    record = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "Not Found: /x", None, None)
    record.request, record.status_code, record.color_message = Request(), 404, "\x1b[36mNot Found\x1b[0m"
    record.counts = {"rows": 3, "urls": ["https://h/x?token=abc123secret"]}
    line = json.loads(JsonFormatter().format(record))
    assert line["request"] == "<ASGIRequest: GET '/x?access_token=********'>"
    assert line["status_code"] == 404 and "color_message" not in line
    assert line["counts"] == {"rows": 3, "urls": ["https://h/x?token=********"]}
