"""each aggregate's events numbered in commit order; the stream entry each event went to

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 15:00:00.000000

Until 0005, each user's events were ordered by created_at, the writer's clock: with app servers on
two hosts, a writer whose clock runs behind stamps its event earlier than one that committed
before it. From 0006 each event carries its number within its aggregate (`sequence`), given by a
counter row (`aggregate_sequences`) that the writer increments in its own transaction; existing
events are numbered in their current order (created_at, id). The relay also records the stream
entry it appended each event to (`stream_id`), and the consumer's inbox and read model keep the
numbers they applied.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: str | Sequence[str] | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0005 (migrations import no app code).
HOLDING = "status = 'failed' OR (status = 'pending' AND next_attempt_at IS NOT NULL)"
PENDING = "status = 'pending'"


def upgrade() -> None:
    """Upgrade schema."""
    postgresql = op.get_context().dialect.name == "postgresql"
    op.create_table('aggregate_sequences',
    sa.Column('aggregate_type', sa.String(length=100), nullable=False),
    sa.Column('aggregate_id', sa.String(length=36), nullable=False),
    sa.Column('last_sequence', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('aggregate_type', 'aggregate_id', name=op.f('pk_aggregate_sequences'))
    )
    # SQLite adds a NOT NULL column only with a default (and changes it only by copying the table);
    # PostgreSQL adds it empty and is told NOT NULL once every row has its number.
    op.add_column('domain_events', sa.Column(
        'sequence', sa.BigInteger(), nullable=postgresql, server_default=None if postgresql else sa.text('0')))
    op.execute("""
        UPDATE domain_events SET sequence = numbered.n
        FROM (SELECT id, row_number() OVER (PARTITION BY aggregate_type, aggregate_id ORDER BY created_at, id) AS n
              FROM domain_events) AS numbered
        WHERE domain_events.id = numbered.id
    """)
    if postgresql:
        op.alter_column('domain_events', 'sequence', nullable=False, existing_type=sa.BigInteger())
    op.execute("""
        INSERT INTO aggregate_sequences (aggregate_type, aggregate_id, last_sequence)
        SELECT aggregate_type, aggregate_id, max(sequence) FROM domain_events GROUP BY aggregate_type, aggregate_id
    """)
    op.create_index('uq_domain_events_aggregate_sequence', 'domain_events',
                    ['aggregate_type', 'aggregate_id', 'sequence'], unique=True)
    op.create_index('ix_events_pending', 'domain_events', ['aggregate_type', 'aggregate_id', 'sequence'],
                    postgresql_where=sa.text(PENDING), sqlite_where=sa.text(PENDING))
    op.drop_index('ix_events_holding', table_name='domain_events',
                  postgresql_where=sa.text(HOLDING), sqlite_where=sa.text(HOLDING))
    op.create_index('ix_events_holding', 'domain_events', ['aggregate_type', 'aggregate_id', 'sequence'],
                    postgresql_where=sa.text(HOLDING), sqlite_where=sa.text(HOLDING))
    op.add_column('domain_events', sa.Column('stream_id', sa.String(length=40), nullable=True))

    op.add_column('consumer_inbox', sa.Column('aggregate_type', sa.String(length=100), nullable=True))
    op.add_column('consumer_inbox', sa.Column('aggregate_id', sa.String(length=36), nullable=True))
    op.add_column('consumer_inbox', sa.Column('sequence', sa.BigInteger(), nullable=True))
    op.create_index('ix_consumer_inbox_aggregate', 'consumer_inbox', ['aggregate_type', 'aggregate_id', 'sequence'])
    op.add_column('score_summaries', sa.Column('latest_sequence', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column('score_summaries', 'latest_sequence')
    op.drop_index('ix_consumer_inbox_aggregate', table_name='consumer_inbox')
    for column in ('sequence', 'aggregate_id', 'aggregate_type'):
        op.drop_column('consumer_inbox', column)
    op.drop_column('domain_events', 'stream_id')
    op.drop_index('ix_events_holding', table_name='domain_events',
                  postgresql_where=sa.text(HOLDING), sqlite_where=sa.text(HOLDING))
    op.create_index('ix_events_holding', 'domain_events', ['aggregate_type', 'aggregate_id', 'created_at'],
                    postgresql_where=sa.text(HOLDING), sqlite_where=sa.text(HOLDING))
    op.drop_index('ix_events_pending', table_name='domain_events',
                  postgresql_where=sa.text(PENDING), sqlite_where=sa.text(PENDING))
    op.drop_index('uq_domain_events_aggregate_sequence', table_name='domain_events')
    op.drop_column('domain_events', 'sequence')
    op.drop_table('aggregate_sequences')
