"""Roles and the audit trail: API keys and console users carry a role (keys made before roles existed become
submitters, the console users there were become admins); a training run records the key that requested it; the
append-only ``audit_events`` table, whose rows the database itself refuses to update or delete (a trigger on
each dialect).

On SQLite every ALTER is a table rebuild (Alembic's batch mode), which cannot reflect the expression index of
migration 0002, so that index is dropped first and created again afterwards (as in 0003).

Revision ID: 0005_roles_audit
Revises: 0007_matching (written on 0004; chained after 0007_matching when main, which had it, was merged in)
Create Date: 2026-12-02 03:00:00
"""
from alembic import op
import sqlalchemy as sa

# The file is numbered by its place in the chain; the revision id keeps the name it was deployed with
# (databases store it in alembic_version), so ids and file names differ from 0005 to 0009.
revision = "0005_roles_audit"
down_revision = "0008_callbacks_retention"
branch_labels = None
depends_on = None

ROLES = ("submitter", "viewer", "moderator", "admin")
USER_ROLES = ("viewer", "moderator", "admin")
ACTOR_KINDS = ("user", "key", "system", "anonymous")
ONE_ACTIVE_RUN = ("CREATE UNIQUE INDEX uq_training_runs_one_active ON training_runs "
                  "((status IN ('queued', 'running'))) WHERE status IN ('queued', 'running')")

POSTGRES_GUARD = [
    "CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP; END $$",
    "CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events "
    "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()",
]
SQLITE_GUARD = [
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END",
    "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END",
]


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="submitter"))
        batch.create_check_constraint("ck_api_keys_role", _in("role", ROLES))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="moderator"))
        batch.create_check_constraint("ck_users_role", _in("role", USER_ROLES))
    op.execute("UPDATE users SET role = 'admin'")
    op.execute("DROP INDEX uq_training_runs_one_active")
    with op.batch_alter_table("training_runs") as batch:
        batch.add_column(sa.Column("api_key_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_training_runs_api_key_id", "api_keys", ["api_key_id"], ["id"])
    op.execute(ONE_ACTIVE_RUN)
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_name", sa.String(100), nullable=False),
        sa.Column("actor_role", sa.String(16), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("object_type", sa.String(40), nullable=False),
        sa.Column("object_id", sa.String(100), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.CheckConstraint(_in("actor_kind", ACTOR_KINDS), name="ck_audit_events_actor_kind"),
        sa.CheckConstraint(_in("actor_role", ROLES), name="ck_audit_events_actor_role"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_object", "audit_events", ["object_type", "object_id"])
    op.create_index("ix_audit_events_action_at", "audit_events", ["action", "at"])
    for statement in POSTGRES_GUARD if op.get_bind().dialect.name == "postgresql" else SQLITE_GUARD:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER audit_events_no_change ON audit_events")
        op.execute("DROP FUNCTION audit_events_append_only()")
    else:
        op.execute("DROP TRIGGER audit_events_no_delete")
        op.execute("DROP TRIGGER audit_events_no_update")
    op.drop_table("audit_events")
    op.execute("DROP INDEX uq_training_runs_one_active")
    with op.batch_alter_table("training_runs") as batch:
        batch.drop_constraint("fk_training_runs_api_key_id", type_="foreignkey")
        batch.drop_column("api_key_id")
    op.execute(ONE_ACTIVE_RUN)
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("ck_users_role", type_="check")
        batch.drop_column("role")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint("ck_api_keys_role", type_="check")
        batch.drop_column("role")
