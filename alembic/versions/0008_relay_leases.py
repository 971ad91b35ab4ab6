"""the users' partitions, leased to relays, and the relays running

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 18:00:00.000000

Several relays in aggregate order share the users out: each user belongs to one of 32 partitions (a
hash of its key), and each partition is leased to one relay at a time (`relay_leases`: its holder
and when its lease expires, on the database's clock). Each running relay renews its row in
`relay_members` at every heartbeat; the partitions are split among the members seen lately
(source/partitions.py). On PostgreSQL, an index of each partition's pending events, oldest first,
lets a relay read only its own partitions' oldest events. Only new tables and an index: existing
rows are untouched. Stepping below this revision
drops them: a relay in aggregate order on PostgreSQL then fails each cycle, with its error on
section 5, until they are back (section 6 refuses to step down while the publisher runs).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: str | Sequence[str] | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARTITIONS = 32  # as source/models.py (migrations import no app code); changing it takes a revision


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('relay_leases',
    sa.Column('partition', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('holder', sa.String(length=100), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('partition', name=op.f('pk_relay_leases'))
    )
    op.create_table('relay_members',
    sa.Column('relay_id', sa.String(length=100), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('relay_id', name=op.f('pk_relay_members'))
    )
    if op.get_bind().dialect.name == 'postgresql':  # SQLite has no partitions: one relay at a time
        op.create_index('ix_events_partition', 'domain_events',
                        [sa.text(f"(hashtextextended(aggregate_type || '/' || aggregate_id, 0) & {PARTITIONS - 1})"),
                         'created_at', 'id'], postgresql_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('ix_events_partition', table_name='domain_events')
    op.drop_table('relay_members')
    op.drop_table('relay_leases')
