"""The leases table: which server replica leads, at which epoch, until when (fleet_server/leadership.py).

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("leases",
                    sa.Column("name", sa.Text(), nullable=False),
                    sa.Column("holder", sa.Text(), nullable=False),
                    sa.Column("epoch", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
                    sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint("name"))


def downgrade() -> None:
    op.drop_table("leases")
