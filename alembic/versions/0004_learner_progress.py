"""learners, their progress marks and quiz answers (the room's bookkeeping)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 10:45:00.000000

A learner is a row keyed by the SHA-256 of the token in their URL, so that a refresh, a bookmark
or a server restart resumes them. These tables are not the lesson's models: they live in
runtime.learners.room_metadata, which Alembic's env.py compares beside Base.metadata. Only new
tables: existing rows are untouched; stepping below 0004 drops every learner's saved progress.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: str | Sequence[str] | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('learners',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=40), nullable=True),
    sa.Column('made', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_learners')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_learners_token_hash'))
    )
    op.create_index(op.f('ix_learners_last_seen_at'), 'learners', ['last_seen_at'], unique=False)
    op.create_table('learner_progress',
    sa.Column('learner_id', sa.String(length=36), nullable=False),
    sa.Column('section', sa.String(length=40), nullable=False),
    sa.Column('done', sa.Boolean(), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['learner_id'], ['learners.id'], name=op.f('fk_learner_progress_learner_id_learners'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('learner_id', 'section', name=op.f('pk_learner_progress'))
    )
    op.create_table('learner_answers',
    sa.Column('learner_id', sa.String(length=36), nullable=False),
    sa.Column('section', sa.String(length=40), nullable=False),
    sa.Column('question', sa.Integer(), nullable=False),
    sa.Column('choice', sa.Integer(), nullable=False),
    sa.Column('correct', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['learner_id'], ['learners.id'], name=op.f('fk_learner_answers_learner_id_learners'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('learner_id', 'section', 'question', name=op.f('pk_learner_answers'))
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('learner_answers')
    op.drop_table('learner_progress')
    op.drop_index(op.f('ix_learners_last_seen_at'), table_name='learners')
    op.drop_table('learners')
