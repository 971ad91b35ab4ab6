"""6. A revision that adds a required column, twice. The minimal one is what autogenerate writes for
a new NOT NULL column: it works on an empty table and fails on one that has rows. The hardened one
adds the column in three steps (expand, backfill, contract) and works on both. Each takes the
Alembic `op` and the table's name, so the lab can run it on a table of its own; in a revision file
`op` is `from alembic import op` and `upgrade()` takes nothing."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.operations import Operations


def add_plan_minimal(op: Operations, table: str = "users") -> None:
    op.add_column(table, sa.Column("plan", sa.String(20), nullable=False))


def add_plan_hardened(op: Operations, table: str = "users") -> None:
    # 1. expand: a column that may be empty, so the rows already there stay valid
    op.add_column(table, sa.Column("plan", sa.String(20), nullable=True))
    # 2. backfill: a value for every row that has none
    rows = sa.table(table, sa.column("plan", sa.String(20)))
    op.execute(rows.update().where(rows.c.plan.is_(None)).values(plan="free"))
    # 3. contract: now the column can refuse empty values (batch mode: SQLite rebuilds the table)
    with op.batch_alter_table(table) as batch:
        batch.alter_column("plan", existing_type=sa.String(20), nullable=False)
