"""Leases and idempotent POSTs: a running check's lease (renewed by its worker, so a lapsed one means a dead
worker) and which worker holds it, a flag for a check the broker refused when it was accepted (the sweeper sends it later), and the
``Idempotency-Key`` of each POST that carried one, with what it created.

Revision ID: 0010_leases_idempotency
Revises: 0004
Create Date: 2026-12-02 03:00:00
"""
from alembic import op
import sqlalchemy as sa

# The file is numbered by its place in the chain; the revision id keeps the name it was deployed with
# (databases store it in alembic_version), so ids and file names differ from 0005 to 0009.
revision = "0010_leases_idempotency"
down_revision = "0005_roles_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checks") as batch:
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(100), nullable=True))
        batch.add_column(sa.Column("unsent", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("api_key_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("endpoint", sa.String(40), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("api_key_id", "key", name="uq_idempotency_keys_api_key_key"),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("checks") as batch:
        batch.drop_column("unsent")
        batch.drop_column("claimed_by")
        batch.drop_column("lease_expires_at")
