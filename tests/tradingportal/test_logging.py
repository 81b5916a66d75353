"""A failure that repeats is logged once with its traceback, then rarely, then its recovery."""

import logging

from tradingportal.logging import RepeatedFailure


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
