"""The review console as a daily tool: escalations to a second review,
the history of model activations (who promoted or rolled back, and the reason typed to override the promotion
guard), and console logins that last across reloads (a cookie's token, hashed).

Revision ID: 0006_review_queue
Revises: 0010_leases_idempotency (main's chain: 0004 -> 0007 -> 0008 -> 0005 -> 0010; reviews.reason comes from 0008)
Create Date: 2026-12-02 03:00:00
"""
from alembic import op
import sqlalchemy as sa

# The file is numbered by its place in the chain; the revision id keeps the name it was deployed with
# (databases store it in alembic_version), so ids and file names differ from 0005 to 0009.
revision = "0006_review_queue"
down_revision = "0010_leases_idempotency"
branch_labels = None
depends_on = None

ACTIVATION_KINDS = ("promote", "roll_back")


def upgrade() -> None:
    op.create_table(
        "escalations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("images.id"), nullable=False),
        sa.Column("check_id", sa.String(32), sa.ForeignKey("checks.id"), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("escalated_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(100), nullable=True),
    )
    op.create_index("ix_escalations_open", "escalations", ["resolved_at", "created_at"])
    op.create_table(
        "model_activations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_version_id", sa.Integer(), sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("by", sa.String(100), nullable=False),
        sa.Column("refusal", sa.Text(), nullable=True),
        sa.Column("override_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"kind IN ({', '.join(repr(k) for k in ACTIVATION_KINDS)})",
                           name="ck_model_activations_kind"),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("user_name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("console_sessions")
    op.drop_table("model_activations")
    op.drop_index("ix_escalations_open", table_name="escalations")
    op.drop_table("escalations")
