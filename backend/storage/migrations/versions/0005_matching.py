"""Near-duplicate matching: hashes imported from shared hash lists, and reviews that followed a moderator's label
of a near-copy (which image, how far).

Revision ID: 0007_matching
Revises: 0004
Create Date: 2026-12-02 03:00:00
"""
from alembic import op
import sqlalchemy as sa

# The file is numbered by its place in the chain; the revision id keeps the name it was deployed with
# (databases store it in alembic_version), so ids and file names differ from 0005 to 0009.
revision = "0007_matching"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "listed_hashes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("pdq_hex", sa.String(64), nullable=False, unique=True),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("added_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("label IN ('real', 'fake')", name="ck_listed_hashes_label"),
    )
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("matched_image_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("match_distance", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_reviews_matched_image_id", "images", ["matched_image_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.drop_constraint("fk_reviews_matched_image_id", type_="foreignkey")
        batch.drop_column("match_distance")
        batch.drop_column("matched_image_id")
    op.drop_table("listed_hashes")
