"""Video checks (issue 26): an image row says whether it is a still or a clip (an animation is a clip) and how
long it lasts; a check keeps the score, verdict and regions of each sampled frame, and an image the PDQ hashes
of its frames at one a second (vPDQ near-copies).

Revision ID: 0011_video
Revises: 0010_scoring_workers
Create Date: 2026-12-07 19:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "0011_video"
down_revision = "0010_scoring_workers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("media", sa.String(8), nullable=False, server_default="image"))
        batch.add_column(sa.Column("duration_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("frame_hashes", sa.JSON(), nullable=True))
    with op.batch_alter_table("checks") as batch:
        batch.add_column(sa.Column("frames", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("checks") as batch:
        batch.drop_column("frames")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("frame_hashes")
        batch.drop_column("duration_s")
        batch.drop_column("media")
