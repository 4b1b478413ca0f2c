"""partial index on runs the notification loop has not handled yet

Revision ID: 0002_notify_pending_index
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_notify_pending_index"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

_NOTIFY_PENDING = (
    "notified_at IS NULL AND status IN "
    "('success', 'warning', 'partial_success', 'failed', 'cancelled')"
)


def upgrade() -> None:
    op.create_index(
        "ix_runs_notify_pending",
        "runs",
        ["id"],
        sqlite_where=sa.text(_NOTIFY_PENDING),
        postgresql_where=sa.text(_NOTIFY_PENDING),
    )


def downgrade() -> None:
    op.drop_index("ix_runs_notify_pending", table_name="runs")
