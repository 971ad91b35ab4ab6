"""learners' exercise code and results, the starters it began from, and the room's switches

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 16:00:00.000000

Each learner's code per exercise, with the hash of the starter it began from (each starter's text is
kept once, so that a changed starter can be shown as a diff), their last run's results and, per
check, how many of their runs failed it; and the room's switches (exercises on or off on a shared
server). These tables sit beside the learners' own in runtime.learners.room_metadata
(runtime/exercise_store.py). Only new tables: existing rows are untouched; stepping below this
revision drops every learner's saved exercise code and results.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic (the app finds this revision by its file name, *_exercise_attempts.py).
revision: str = '0007'
down_revision: str | Sequence[str] | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('exercise_starters',
    sa.Column('starter_hash', sa.String(length=64), nullable=False),
    sa.Column('exercise_id', sa.String(length=60), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('starter_hash', name=op.f('pk_exercise_starters'))
    )
    op.create_table('exercise_attempts',
    sa.Column('learner_id', sa.String(length=36), nullable=False),
    sa.Column('exercise_id', sa.String(length=60), nullable=False),
    sa.Column('code', sa.Text(), nullable=False),
    sa.Column('starter_hash', sa.String(length=64), nullable=False),
    sa.Column('runs', sa.Integer(), nullable=False),
    sa.Column('failed_runs', sa.Integer(), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('answer_seen', sa.Boolean(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['learner_id'], ['learners.id'], name=op.f('fk_exercise_attempts_learner_id_learners'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['starter_hash'], ['exercise_starters.starter_hash'],
                            name=op.f('fk_exercise_attempts_starter_hash_exercise_starters')),
    sa.PrimaryKeyConstraint('learner_id', 'exercise_id', name=op.f('pk_exercise_attempts'))
    )
    op.create_table('exercise_check_failures',
    sa.Column('learner_id', sa.String(length=36), nullable=False),
    sa.Column('exercise_id', sa.String(length=60), nullable=False),
    sa.Column('check_name', sa.String(length=120), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['learner_id', 'exercise_id'],
                            ['exercise_attempts.learner_id', 'exercise_attempts.exercise_id'],
                            name=op.f('fk_exercise_check_failures_learner_id_exercise_attempts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('learner_id', 'exercise_id', 'check_name', name=op.f('pk_exercise_check_failures'))
    )
    op.create_table('room_switches',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_room_switches'))
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('room_switches')
    op.drop_table('exercise_check_failures')
    op.drop_table('exercise_attempts')
    op.drop_table('exercise_starters')
