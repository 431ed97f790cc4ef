"""At most one training run queued or running, enforced by the database

Two moderators pressing Retrain at the same moment both pass the service's check; this partial unique index
makes the second insert fail, and the service turns that into its `training_busy` refusal.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 13:55:00
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE UNIQUE INDEX uq_training_runs_one_active ON training_runs "
               "((status IN ('queued', 'running'))) WHERE status IN ('queued', 'running')")


def downgrade() -> None:
    op.execute("DROP INDEX uq_training_runs_one_active")
