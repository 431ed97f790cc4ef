"""The one error type every refusal travels as, so each entry point can turn it into its own shape
(a JSON error for the API, a message for the CLI, a failure reason on a check)."""

from __future__ import annotations


class FakewatchError(Exception):
    """A refusal with a stable machine-readable ``code`` and a message a person can act on.

    The HTTP status defaults to 422: a request that was read but fails validation (a wrong type, a value out of
    range, a malformed URL, bytes that are not an image). 400 is only for a body that cannot be parsed at all
    (``Unparseable``)."""

    status: int = 422

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status


class Unparseable(FakewatchError):
    """A body that cannot be read at all (broken JSON, text that is not UTF-8): the one use of 400."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__("invalid_request", message)


class NotFound(FakewatchError):
    status = 404

    def __init__(self, message: str) -> None:
        super().__init__("not_found", message)


class Forbidden(FakewatchError):
    """The key's or user's role may not do this (docs/architecture.md, "Roles and permissions"). Another key's
    objects are NotFound instead, so that ids leak nothing."""

    status = 403

    def __init__(self, message: str) -> None:
        super().__init__("forbidden", message)


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
