"""Who may do what: the one table of roles and permissions (docs/architecture.md, "Roles and permissions"), the
actor every gated service takes, and the ownership rule for reads.

- ``require(actor, Permission.X)`` refuses with ``forbidden`` (403) when the actor's role may not do X;
  ``may(role, Permission.X)`` is the same question for the console to hide a control.
- ``owner_key_id(actor)`` is the API key whose work the actor may read: None when it may read everything (viewers,
  moderators, admins, the system), the key's own id for a submitter. ``visible_or_not_found`` turns another key's
  object into ``not_found``, never ``forbidden``, so ids leak nothing.

Services that change state take an ``Actor`` (and write it to the audit trail, backend/identity/audit.py); the API builds
one from its key (``Actor.of_key``), the console from its logged-in user (``Actor.of_user``), the CLI and internal
jobs use ``Actor.system(...)``."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

from backend.storage.schema import ApiKey, User
from core.enums import ActorKind, Permission, Role
from core.errors import Forbidden, NotFound

_EVERYONE_BUT_SUBMITTERS = frozenset({Role.VIEWER, Role.MODERATOR, Role.ADMIN})
_ACTING = frozenset({Role.MODERATOR, Role.ADMIN})

PERMISSIONS: dict[Permission, frozenset[Role]] = {
    Permission.SUBMIT: frozenset({Role.SUBMITTER, Role.MODERATOR, Role.ADMIN}),
    Permission.READ_ALL: _EVERYONE_BUT_SUBMITTERS,
    Permission.CANCEL_BATCH: frozenset({Role.SUBMITTER, Role.MODERATOR, Role.ADMIN}),
    Permission.LABEL: _ACTING,
    Permission.ESCALATE: _ACTING,
    Permission.TRAIN: _ACTING,
    Permission.PROMOTE: frozenset({Role.ADMIN}),
    Permission.DELETE: frozenset({Role.ADMIN}),
    Permission.MANAGE_KEYS: frozenset({Role.ADMIN}),
    Permission.MANAGE_USERS: frozenset({Role.ADMIN}),
    Permission.CHANGE_SETTINGS: frozenset({Role.ADMIN}),
    Permission.READ_AUDIT: frozenset({Role.VIEWER, Role.ADMIN}),
}


@dataclass(frozen=True)
class Actor:
    """Who is acting: a console user, an API key, or the system (the operator's CLI, fakewatch's own jobs)."""

    kind: ActorKind
    name: str
    role: Role | None  # None: not logged in, may do nothing
    id: int | None = None

    @classmethod
    def of_key(cls, key: ApiKey) -> Actor:
        return cls(kind=ActorKind.KEY, name=key.name, role=key.role, id=key.id)

    @classmethod
    def of_user(cls, user: User) -> Actor:
        return cls(kind=ActorKind.USER, name=user.name, role=user.role, id=user.id)

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        """The operator at the command line, or fakewatch itself: may do everything (it holds the database)."""
        return cls(kind=ActorKind.SYSTEM, name=name, role=Role.ADMIN)

    @classmethod
    def operator(cls) -> Actor:
        """Whoever runs a management command (`fakewatch keys ...`, `users ...`) holds the database already: a
        system actor, named in the audit trail by their OS account."""
        try:
            account = getpass.getuser()
        except (KeyError, OSError):  # no name for this uid (a bare container)
            account = str(os.getuid())
        return cls.system(f"cli:{account}")

    @classmethod
    def anonymous(cls, name: str = "anonymous") -> Actor:
        """Someone not logged in, such as a failed login (named as they typed it)."""
        return cls(kind=ActorKind.ANONYMOUS, name=name, role=None)

    @property
    def label(self) -> str:
        """How the actor reads in a log line and in a review's ``by``."""
        if self.kind is ActorKind.USER:
            return self.name
        return f"API key {self.name}" if self.kind is ActorKind.KEY else f"{self.kind.value} {self.name}"


def may(role: Role | str | None, permission: Permission) -> bool:
    return role is not None and Role(role) in PERMISSIONS[permission]


def require(actor: Actor, permission: Permission) -> None:
    """Refuse with ``forbidden`` (403) unless the actor's role may do this."""
    if not may(actor.role, permission):
        raise Forbidden(f"The {actor.role or 'anonymous'} role may not {_DOING[permission]}.")


def owner_key_id(actor: Actor | None) -> int | None:
    """The API key whose objects this actor may read, or None for everything. ``None`` as the actor is a trusted
    internal caller (a worker, a test seeding data)."""
    if actor is None or may(actor.role, Permission.READ_ALL):
        return None
    # A submitter that is not a key (there is none today) owns nothing: -1 matches no row.
    return actor.id if actor.kind is ActorKind.KEY and actor.id is not None else -1


def visible_or_not_found(actor: Actor | None, owner_id: int | None, what: str, key: object) -> None:
    """Raise ``not_found`` when the object (owned by API key ``owner_id``) is not this actor's to read."""
    allowed = owner_key_id(actor)
    if allowed is not None and owner_id != allowed:
        raise NotFound(f"There is no {what} {key!r}.")


_DOING: dict[Permission, str] = {
    Permission.SUBMIT: "submit checks or batches",
    Permission.READ_ALL: "read other keys' work",
    Permission.CANCEL_BATCH: "cancel batches",
    Permission.LABEL: "label images",
    Permission.ESCALATE: "escalate checks",
    Permission.TRAIN: "start or cancel training runs",
    Permission.PROMOTE: "promote or roll back model versions",
    Permission.DELETE: "delete images",
    Permission.MANAGE_KEYS: "create or revoke API keys",
    Permission.MANAGE_USERS: "create or revoke console users",
    Permission.CHANGE_SETTINGS: "change settings",
    Permission.READ_AUDIT: "read the audit trail",
}
