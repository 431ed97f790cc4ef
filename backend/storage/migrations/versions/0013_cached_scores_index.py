"""The cached-score lookup's index holds ``cached``: every upload of known bytes looks up the model's own earlier
scoring of them (backend/checks/service.py, ``find_cached_scores``), and on (image, model version) alone it read
every earlier check of those bytes, cached answers included, to find the one or two that are not.

Revision ID: 0013_cached_scores_index
Revises: 0012_image_scope
Create Date: 2026-12-08 02:00:00
"""
from alembic import op

revision = "0013_cached_scores_index"
down_revision = "0012_image_scope"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_checks_image_model_cached", "checks", ["image_id", "model_version_id", "cached"])
    # Its leading columns serve every query the old index served.
    op.drop_index("ix_checks_image_model", table_name="checks")


def downgrade() -> None:
    op.create_index("ix_checks_image_model", "checks", ["image_id", "model_version_id"])
    op.drop_index("ix_checks_image_model_cached", table_name="checks")
