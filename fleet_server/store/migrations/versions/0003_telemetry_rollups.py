"""Telemetry rollups and retention: minute and hour rollup tables, a rolled-up flag on raw rows, age indexes.

Revision ID: 0003
Revises: 0002
Raw telemetry rows get ``rolled`` (0 until the leader has added them into
both rollup tables; rows already stored start at 0 and are rolled up by the
first retention steps) and a partial index over the rows still to roll up.
Drift windows and captures get an index on ``received`` so that retention
finds old rows without a scan. See fleet_server/telemetry_rollup.py for what
each rollup column adds up.
"""

from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
SUMS = ("records", "requests", "errors", "fallbacks", "heartbeats", "events", "cpu_percent_sum")
EXTREMES = ("cpu_percent_max", "rss_bytes_max", "memory_percent_max", "disk_free_bytes_min")
ROLLUPS = ("telemetry_minute", "telemetry_hour")
UNROLLED = sa.text("rolled = 0")


def upgrade() -> None:
    for name in ROLLUPS:
        op.create_table(
            name,
            sa.Column("device_id", sa.Text(), nullable=False),
            sa.Column("model", sa.Text(), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("bucket", sa.Text(), nullable=False),
            *(sa.Column(c, BIG, nullable=False, server_default=sa.text("0")) for c in SUMS),
            *(sa.Column(c, BIG) for c in EXTREMES),
            sa.Column("latency_bins", sa.Text()),
            sa.PrimaryKeyConstraint("device_id", "model", "version", "bucket"),
        )
        op.create_index(f"{name}_bucket", name, ["bucket"])
    op.add_column("telemetry", sa.Column("rolled", sa.Integer(), nullable=False, server_default=sa.text("0")))
    op.create_index("telemetry_unrolled", "telemetry", ["received"], sqlite_where=UNROLLED, postgresql_where=UNROLLED)
    op.create_index("drift_windows_received", "drift_windows", ["received"])
    op.create_index("captures_received", "captures", ["received"])


def downgrade() -> None:
    for index, table in (("captures_received", "captures"), ("drift_windows_received", "drift_windows"),
                         ("telemetry_unrolled", "telemetry")):
        op.drop_index(index, table_name=table)
    with op.batch_alter_table("telemetry") as batch:  # SQLite: copies the table without the column
        batch.drop_column("rolled")
    for name in ROLLUPS:
        op.drop_table(name)
