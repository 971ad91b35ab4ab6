"""outbox retries, failed status, consumer inbox

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 12:12:27.527018

What a real outbox needs beyond 0001: per-event attempts, the time of the next attempt and the
last error (status gains a third value, "failed", for events that ran out of attempts); the
consumer's inbox and its read model; and on PostgreSQL a trigger that NOTIFYs the relay when an
event becomes pending.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The channel source/outbox.py listens on (migrations never import the app's code).
NOTIFY_CHANNEL = "domain_events_pending"


def upgrade() -> None:
    """Upgrade schema."""
    # Plain ADD COLUMN, no batch table copy on SQLite: the SQL can be rendered offline too.
    # next_attempt_at stays empty until an attempt fails: empty means due at once.
    op.add_column('domain_events', sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.add_column('domain_events', sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('domain_events', sa.Column('last_error', sa.String(length=500), nullable=True))
    # The claim orders by (created_at, id) and looks for earlier events of the same aggregate
    # that wait for a retry: one index for each, so neither scans every pending row per event.
    op.drop_index('ix_events_status_created', table_name='domain_events')
    op.create_index('ix_events_claim', 'domain_events', ['status', 'created_at', 'id'], unique=False)
    op.create_index(
        'ix_events_aggregate_wait', 'domain_events',
        ['aggregate_type', 'aggregate_id', 'status', 'next_attempt_at'], unique=False,
    )

    op.create_table('consumer_inbox',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('stream_id', sa.String(length=40), nullable=False),
    sa.Column('deliveries', sa.Integer(), nullable=False),
    sa.Column('applied_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_consumer_inbox'))
    )
    op.create_table('score_summaries',
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('scores_applied', sa.Integer(), nullable=False),
    sa.Column('latest_score_id', sa.String(length=36), nullable=False),
    sa.Column('latest_air_score', sa.Float(), nullable=False),
    sa.Column('latest_event_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_score_summaries'))
    )

    if op.get_context().dialect.name == "postgresql":
        # Delivered to listeners when the inserting transaction commits, never before; identical
        # notifications of one transaction arrive as one.
        op.execute(f"""
            CREATE FUNCTION domain_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
                RETURN NULL;
            END $$
        """)
        op.execute("""
            CREATE TRIGGER domain_events_notify
            AFTER INSERT OR UPDATE OF status ON domain_events
            FOR EACH ROW WHEN (NEW.status = 'pending')
            EXECUTE FUNCTION domain_events_notify()
        """)


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS domain_events_notify ON domain_events")
        op.execute("DROP FUNCTION IF EXISTS domain_events_notify()")
    op.drop_table('score_summaries')
    op.drop_table('consumer_inbox')
    op.drop_index('ix_events_aggregate_wait', table_name='domain_events')
    op.drop_index('ix_events_claim', table_name='domain_events')
    op.create_index('ix_events_status_created', 'domain_events', ['status', 'created_at'], unique=False)
    # Plain DROP COLUMN (SQLite 3.35+) rather than a batch table copy: renderable offline.
    for column in ('last_error', 'next_attempt_at', 'attempts'):
        op.drop_column('domain_events', column)
