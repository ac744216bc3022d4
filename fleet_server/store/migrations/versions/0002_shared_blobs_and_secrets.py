"""Shared state for replicas: blobs as rows and sealed server secrets (issue 14).

Revision ID: 0002
Revises: 0001
``blob_objects`` and ``blob_pieces`` hold model files and bundle chunks when
the server runs on a shared database (``fleet_server/store/blob_rows.py``);
``server_secrets`` holds the key ring, the CA and the CRL state sealed under
the server's secret key (``fleet_server/store/secrets.py``). A data dir on
the SQLite default gets the empty tables and keeps its files.
"""

from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table("blob_objects",
                    sa.Column("store", sa.Text(), nullable=False), sa.Column("sha256", sa.Text(), nullable=False),
                    sa.Column("size", BIG, nullable=False), sa.Column("pieces", sa.Integer(), nullable=False),
                    sa.Column("created", sa.Text(), nullable=False), sa.PrimaryKeyConstraint("store", "sha256"))
    op.create_table("blob_pieces",
                    sa.Column("store", sa.Text(), nullable=False), sa.Column("sha256", sa.Text(), nullable=False),
                    sa.Column("seq", sa.Integer(), nullable=False), sa.Column("data", sa.LargeBinary(), nullable=False),
                    sa.PrimaryKeyConstraint("store", "sha256", "seq"))
    op.create_table("server_secrets",
                    sa.Column("name", sa.Text(), nullable=False), sa.Column("version", sa.Integer(), nullable=False),
                    sa.Column("key_id", sa.Text(), nullable=False),
                    sa.Column("sealed", sa.LargeBinary(), nullable=False),
                    sa.Column("updated", sa.Text(), nullable=False), sa.PrimaryKeyConstraint("name"))


def downgrade() -> None:
    op.drop_table("server_secrets")
    op.drop_table("blob_pieces")
    op.drop_table("blob_objects")
