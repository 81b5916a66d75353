"""Why a sync stopped. Each error carries the command's documented exit code."""


class SyncError(Exception):
    """``detail`` is anything quoted from the input (a header line, a server's reason
    phrase): part of the message for a person at a shell, left out of the record of a
    sync started from the web (``summary``), which must never echo what a URL returned."""

    exit_code = 1
    status = "failed"

    def __init__(self, message: str = "", *, detail: str = "") -> None:
        super().__init__(f"{message}{detail}")
        self.summary = message


class BadInput(SyncError):
    """The input is not an instrument dump (wrong header, HTML page, empty, truncated)."""

    exit_code = 3


class ShrinkRefused(SyncError):
    """The dump is far smaller than what is listed in its scope; ``--force`` overrides."""

    exit_code = 4
    status = "refused"


class SyncLocked(SyncError):
    """Another sync holds the lock."""

    exit_code = 5
    status = "refused"


class SourceUnreachable(SyncError):
    """The file or URL could not be read."""

    exit_code = 6


class UrlRefused(SourceUnreachable):
    """A sync started from the web named a URL it may not fetch (not an allowed dump host,
    a private address, credentials in the URL). The command line is not restricted."""

    status = "refused"


class QueueUnavailable(SyncError):
    """The task queue (Redis or the database broker) could not take the sync."""


class ActivationLimitExceeded(SyncError):
    """Activating would put more instruments on the feed than it can carry."""

    exit_code = 7
    status = "refused"


EXIT_CODES = {
    0: "ok (rows may have been rejected; see the report)",
    1: "unexpected error",
    2: "bad command-line usage",
    BadInput.exit_code: "bad input: not an instrument dump (wrong header, HTML, empty, truncated gzip)",
    ShrinkRefused.exit_code: "refused: the dump is far smaller than the last good one (use --force)",
    SyncLocked.exit_code: "another sync is running (lock held)",
    SourceUnreachable.exit_code: "source unreachable: file missing or URL failed",
    ActivationLimitExceeded.exit_code: "refused: the preset would exceed the feed's instrument limit",
}
