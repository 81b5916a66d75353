"""Why a sync stopped. Each error carries the command's documented exit code."""


class SyncError(Exception):
    exit_code = 1
    status = "failed"


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
