"""Scoring workers that can score: each scoring process writes its row once its model is loaded and warm, and keeps
it fresh, so `fakewatch up` and a keyed /readyz can tell that a check will be scored now (issue 25, item 3).

Revision ID: 0010_scoring_workers
Revises: 0006_review_queue
Create Date: 2026-12-07 18:40:00
"""
from alembic import op
import sqlalchemy as sa

revision = "0010_scoring_workers"
down_revision = "0006_review_queue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scoring_workers",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("runtime", sa.String(32), nullable=False),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scoring_workers")
