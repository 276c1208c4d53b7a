"""The project's error types.

Every error a user can cause (a bad seed file, a bad config, an unreachable server) is a
`SelfInstructError`; the CLI prints its message as one line and exits non-zero. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SelfInstructError(Exception):
    """Base of every error caused by user input or the environment."""

    exit_code = 2


class ConfigError(SelfInstructError):
    """A config file, preset, prompt file or flag is invalid."""


class SeedFileError(SelfInstructError):
    """A seed-task file is malformed; the message names file:line."""


class InputFileError(SelfInstructError):
    """An input file (dataset, run directory) is missing or malformed."""


class RunFileError(InputFileError):
    """A run directory's config.yaml or summary.json is there but unreadable; the message names it."""


class MissingDependencyError(SelfInstructError):
    """An optional package that a command needs is not installed; the message says what to pip install."""


class RunBusyError(SelfInstructError):
    """Another process is writing the same run directory (it holds the run's lock)."""


class OutputError(SelfInstructError):
    """Standard output cannot be written (a full disk, /dev/full); a closed pipe is not one."""


class BackendError(SelfInstructError):
    """A model backend failed in a way that retrying will not fix (bad key, unknown model)."""

    exit_code = 3


class RetryableBackendError(Exception):
    """A transient backend failure (429, 5xx, timeout, reset, garbled body): worth retrying.

    Not a `SelfInstructError`: the request engine catches it and retries; it only reaches
    the user wrapped in a `RequestsFailedError`.
    """

    def __init__(self, message: str, retry_after: float | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # What went wrong, for admission control: "rate_limit" (429), "overloaded" (503),
        # "timeout" (the first three mean the endpoint is saturated), "server", "connection",
        # "garbled", "no_content" and "not_an_answer" (a 200 that is not a usable answer);
        # None when the backend does not say.
        self.kind = kind


class RequestsFailedError(SelfInstructError):
    """Some requests still failed after every retry; they are listed in failed.jsonl."""

    exit_code = 4
