"""The one error type every refusal travels as, so each entry point can turn it into its own shape
(a JSON error for the API, a message for the CLI, a failure reason on a check)."""

from __future__ import annotations


class FakewatchError(Exception):
    """A refusal with a stable machine-readable ``code`` and a message a person can act on."""

    status: int = 400

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status


class NotFound(FakewatchError):
    status = 404

    def __init__(self, message: str) -> None:
        super().__init__("not_found", message)


class BrokerUnavailable(FakewatchError):
    """The broker (Redis, or the embedded broker's file) did not answer: nothing was lost, try again shortly."""

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__("broker_unavailable", message)


class DatabaseUnavailable(FakewatchError):
    """The database did not answer (down, unreachable, or the embedded file locked): nothing was accepted."""

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__("database_unavailable", message)
