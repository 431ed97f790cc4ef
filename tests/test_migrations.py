"""The migration files: one chain without gaps or forks, each file numbered by its place in it, and a database
created at the head that deployments have today (``0006_review_queue``, before the files were renumbered) upgrades
to the current head."""

from __future__ import annotations

import re

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from backend.settings import Settings
from backend.storage.db import get_engine
from backend.storage.migrate import MIGRATIONS_DIR, alembic_config, upgrade_database

DEPLOYED_HEAD = "0006_review_queue"


def chain() -> list[str]:
    """Revision ids from the first to the head, following each revision's ``down_revision``."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    heads = script.get_heads()
    assert len(heads) == 1, f"the chain forks: heads {heads}"
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def test_the_chain_has_one_root_one_head_and_no_gap() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    revisions = list(script.walk_revisions())
    bases = [revision.revision for revision in revisions if revision.down_revision is None]
    assert bases == ["0001"], f"one first revision, found {bases}"
    children: dict[str, list[str]] = {}
    for revision in revisions:
        assert not isinstance(revision.down_revision, tuple), f"{revision.revision} merges several revisions"
        if revision.down_revision is not None:
            children.setdefault(str(revision.down_revision), []).append(revision.revision)
    forks = {parent: found for parent, found in children.items() if len(found) > 1}
    assert forks == {}, f"revisions with more than one child: {forks}"
    assert len(chain()) == len(revisions)


def test_each_file_is_numbered_by_its_place_in_the_chain() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    numbers = {}
    for revision in script.walk_revisions():
        assert revision.path is not None
        name = revision.path.rsplit("/", 1)[-1]
        match = re.match(r"(\d{4})_\w+\.py$", name)
        assert match, f"{name} is not named NNNN_what.py"
        numbers[revision.revision] = int(match.group(1))
    assert [numbers[revision] for revision in chain()] == list(range(1, len(numbers) + 1))
    files = sorted(path.name for path in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
    assert len(files) == len(numbers), "a file in versions/ is not part of the chain"


def test_a_database_at_the_deployed_head_upgrades_to_the_current_head(settings: Settings) -> None:
    command.upgrade(alembic_config(settings.database), DEPLOYED_HEAD)
    engine = get_engine(settings.database)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == DEPLOYED_HEAD
    upgrade_database(settings.database)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == chain()[-1]
    assert {"escalations", "model_activations", "console_sessions"} <= set(inspect(engine).get_table_names())
