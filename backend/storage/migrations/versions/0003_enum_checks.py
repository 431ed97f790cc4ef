"""Statuses, verdicts, labels and sources refused by the database unless they are one of core.enums' members;
batches settled once here (their status is now written when their last item finishes, never when read); the
never-written api_keys.last_used_at dropped

The value lists are written out, not imported: a revision must keep meaning what it meant when it was written.
A new member of one of these enums comes with a revision that drops the column's constraint and creates it again
with the longer list (``_replace_check`` below does both).

On SQLite every ALTER is a table rebuild (Alembic's batch mode), which cannot reflect the expression index of
migration 0002, so that index is dropped first and created again afterwards.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 09:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CHECKS = {
    ("checks", "status"): ("queued", "running", "done", "failed", "cancelled"),
    ("checks", "source"): ("upload", "url", "extension", "batch"),
    ("checks", "verdict"): ("real", "uncertain", "fake"),
    ("batches", "status"): ("queued", "running", "done", "cancelled"),
    ("training_runs", "status"): ("queued", "running", "done", "failed", "cancelled"),
    ("reviews", "label"): ("real", "fake"),
}
ONE_ACTIVE_RUN = ("CREATE UNIQUE INDEX uq_training_runs_one_active ON training_runs "
                  "((status IN ('queued', 'running'))) WHERE status IN ('queued', 'running')")


def _constraint(table: str, column: str) -> str:
    return f"ck_{table}_{column}"


def _replace_check(table: str, column: str, values: tuple[str, ...] | None) -> None:
    """Drop the column's CHECK constraint when it has one, then create it with ``values`` (None: none at all)."""
    with op.batch_alter_table(table) as batch:
        if values is None:
            batch.drop_constraint(_constraint(table, column), type_="check")
        else:
            batch.create_check_constraint(_constraint(table, column),
                                          f"{column} IN ({', '.join(repr(value) for value in values)})")


def upgrade() -> None:
    op.execute("DROP INDEX uq_training_runs_one_active")
    for (table, column), values in CHECKS.items():
        _replace_check(table, column, values)
    op.execute(ONE_ACTIVE_RUN)
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at")
    # Batches whose items all ended before this revision were marked done only when someone read them.
    op.execute("UPDATE batches SET status = 'running' WHERE status = 'queued' AND EXISTS "
               "(SELECT 1 FROM checks WHERE checks.batch_id = batches.id AND checks.status != 'queued')")
    op.execute("UPDATE batches SET status = 'done', finished_at = COALESCE("
               "(SELECT max(checks.finished_at) FROM checks "
               "WHERE checks.batch_id = batches.id AND checks.status != 'cancelled'), CURRENT_TIMESTAMP) "
               "WHERE status IN ('queued', 'running') AND NOT EXISTS "
               "(SELECT 1 FROM checks WHERE checks.batch_id = batches.id AND checks.status IN ('queued', 'running'))")


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("DROP INDEX uq_training_runs_one_active")
    for table, column in CHECKS:
        _replace_check(table, column, None)
    op.execute(ONE_ACTIVE_RUN)
