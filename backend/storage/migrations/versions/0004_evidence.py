"""Evidence beside the model's score: an image's provenance (read once from its original bytes) and PDQ hash; a
check's verdict source, its near-duplicate match and the detector's per-crop regions.

Checks scored before this revision were decided by the model alone, so their verdict source is ``model``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

VERDICT_SOURCES = ("model", "provenance", "match", "review")


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("provenance", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("pdq_hex", sa.String(64), nullable=True))
        batch.add_column(sa.Column("pdq_quality", sa.Integer(), nullable=True))
    with op.batch_alter_table("checks") as batch:
        batch.add_column(sa.Column("verdict_source", sa.String(16), nullable=True))
        batch.add_column(sa.Column("match", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("regions", sa.JSON(), nullable=True))
        batch.create_check_constraint(
            "ck_checks_verdict_source", f"verdict_source IN ({', '.join(repr(v) for v in VERDICT_SOURCES)})")
    op.execute("UPDATE checks SET verdict_source = 'model' WHERE verdict IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("checks") as batch:
        batch.drop_constraint("ck_checks_verdict_source", type_="check")
        batch.drop_column("regions")
        batch.drop_column("match")
        batch.drop_column("verdict_source")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("pdq_quality")
        batch.drop_column("pdq_hex")
        batch.drop_column("provenance")
