"""Actors for tests that call the gated services directly (backend/identity/access.py): a console user of a given role,
and the operator (the system actor the CLI acts as)."""

from __future__ import annotations

from backend.identity.access import Actor
from core.enums import ActorKind, Role

OPERATOR = Actor.system("tests")


def as_user(name: str = "moderator", role: Role = Role.MODERATOR, user_id: int | None = None) -> Actor:
    """A console user called ``name`` (their reviews record the name), by default a moderator."""
    return Actor(kind=ActorKind.USER, name=name, role=role, id=user_id)
