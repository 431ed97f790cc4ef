"""Callbacks and retention (issue 17): a signing secret and a default callback URL per API key, a callback URL on
checks and batches, one delivery record per callback owed, deleted images (the row stays, marked; its checks
are marked too), and a review's reason (reviews now arrive over the API too).

Keys created before this revision get a secret here, so every key can sign its callbacks.

Revision ID: 0008_callbacks_retention
Revises: 0004
Create Date: 2026-12-02 03:00:00
"""
import secrets

from alembic import op
import sqlalchemy as sa

# The file is numbered by its place in the chain; the revision id keeps the name it was deployed with
# (databases store it in alembic_version), so ids and file names differ from 0005 to 0009.
revision = "0008_callbacks_retention"
down_revision = "0007_matching"
branch_labels = None
depends_on = None

DELIVERY_STATUSES = ("pending", "delivered", "failed")
SECRET_PREFIX = "whsec_"


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("secret", sa.String(80), nullable=True))
        batch.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
    connection = op.get_bind()
    for (key_id,) in connection.execute(sa.text("SELECT id FROM api_keys")).fetchall():
        connection.execute(sa.text("UPDATE api_keys SET secret = :secret WHERE id = :id"),
                           {"secret": SECRET_PREFIX + secrets.token_hex(32), "id": key_id})
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
    with op.batch_alter_table("checks") as batch:
        batch.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("image_deleted_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("reason", sa.String(200), nullable=True))
    op.create_table(
        "callback_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("check_id", sa.String(32), sa.ForeignKey("checks.id"), nullable=True, unique=True),
        sa.Column("batch_id", sa.String(32), sa.ForeignKey("batches.id"), nullable=True, unique=True),
        sa.Column("api_key_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"status IN ({', '.join(repr(v) for v in DELIVERY_STATUSES)})",
                           name="ck_callback_deliveries_status"),
    )
    op.create_index("ix_callback_deliveries_status_next", "callback_deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_callback_deliveries_status_next", table_name="callback_deliveries")
    op.drop_table("callback_deliveries")
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("reason")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("deleted_at")
    with op.batch_alter_table("checks") as batch:
        batch.drop_column("image_deleted_at")
        batch.drop_column("callback_url")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("callback_url")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("callback_url")
        batch.drop_column("secret")
