"""Images out of the detector's scope (core/scope.py): the reason, read from the pixels when the image is scored,
so the policy answers "uncertain: out of scope: ..." on every later read.

Revision ID: 0012_image_scope
Revises: 0011_video
Create Date: 2026-12-07 18:40:00
"""
from alembic import op
import sqlalchemy as sa

revision = "0012_image_scope"
down_revision = "0011_video"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("images", sa.Column("scope", sa.String(160), nullable=True))


def downgrade() -> None:
    op.drop_column("images", "scope")
