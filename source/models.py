"""1. Data models: typed SQLAlchemy 2.x declarative mappings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    func,
    literal_column,
    text,
)
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so that migrations can drop or alter them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator):
    """A timezone-aware timestamp on every backend (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware value")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# AsyncAttrs adds `obj.awaitable_attrs.<relationship>`: the explicit, awaitable lazy load.
class Base(AsyncAttrs, DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class User(Base, TimestampMixin):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(255), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(255))
    occupation_code: Mapped[str | None] = mapped_column(String(20))
    education_level: Mapped[str | None] = mapped_column(String(50))
    years_experience: Mapped[float | None] = mapped_column(Float)

    assessments: Mapped[list[Assessment]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )
    scores: Mapped[list[AIRScore]] = relationship(
        back_populates="user", cascade="all, delete-orphan", order_by="AIRScore.created_at"
    )
    # One-to-one: a scalar, not a list (`Profile | None` gives uselist=False). Deleting is left to
    # the database: the foreign key says ON DELETE CASCADE, and passive_deletes=True tells the
    # session not to load the profile just to delete it (one it has loaded, it deletes itself).
    profile: Mapped[Profile | None] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )
    # Many-to-many through the user_skills association table. session.delete(user) loads the
    # user's skills and deletes their user_skills rows itself (passive_deletes=True would skip the
    # load and leave unloaded pairs to ON DELETE CASCADE); the skills stay.
    skills: Mapped[list[Skill]] = relationship(
        secondary=lambda: user_skills, back_populates="users", order_by="Skill.name"
    )


class Assessment(Base, TimestampMixin):
    __tablename__ = "assessments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="in_progress")
    component: Mapped[str] = mapped_column(String(50))
    current_ability: Mapped[float] = mapped_column(Float, default=0.0)
    items_administered: Mapped[int] = mapped_column(default=0)

    user: Mapped[User] = relationship(back_populates="assessments")


class AIRScore(Base, TimestampMixin):
    __tablename__ = "air_scores"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    occupation_code: Mapped[str] = mapped_column(String(20))
    air_score: Mapped[float] = mapped_column(Float)
    vr_score: Mapped[float] = mapped_column(Float)
    hr_score: Mapped[float] = mapped_column(Float)
    synergy_score: Mapped[float] = mapped_column(Float)
    ci_lower: Mapped[float] = mapped_column(Float)
    ci_upper: Mapped[float] = mapped_column(Float)
    parameter_version: Mapped[str] = mapped_column(String(20))
    calculation_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    user: Mapped[User] = relationship(back_populates="scores")


class Profile(Base, TimestampMixin):
    """At most one per user: its primary key is the user's ID (revision 0003)."""

    __tablename__ = "user_profiles"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    headline: Mapped[str] = mapped_column(String(200))
    location: Mapped[str | None] = mapped_column(String(100))

    user: Mapped[User] = relationship(back_populates="profile")


# A many-to-many needs a table of pairs and no class: one row says "this user has this skill".
# Its foreign keys cascade, so a DELETE that SQLAlchemy does not send (Core, or psql) cannot leave
# pairs that name a deleted user or skill.
user_skills = Table(
    "user_skills",
    Base.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("skill_id", ForeignKey("skills.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Skill(Base):
    __tablename__ = "skills"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)

    users: Mapped[list[User]] = relationship(
        secondary=user_skills, back_populates="skills", order_by="User.email"
    )


HOLDING_EVENTS = "status = 'failed' OR (status = 'pending' AND next_attempt_at IS NOT NULL)"


class AggregateSequence(Base):
    """Each aggregate's event counter (revision 0006). A writer increments its row in the same
    transaction as the event, so the row stays locked until that commit: two writes for one user
    take turns, and their numbers follow their commit order whatever the app servers' clocks say.
    A counter, not max(sequence) of the events: retention deletes old events, and a number must
    never be given twice."""

    __tablename__ = "aggregate_sequences"

    aggregate_type: Mapped[str] = mapped_column(String(100), primary_key=True)
    aggregate_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    last_sequence: Mapped[int] = mapped_column(BigInteger)


class DomainEvent(Base, TimestampMixin):
    """A row of the transactional outbox: written in the same commit as the change it reports."""

    __tablename__ = "domain_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    event_type: Mapped[str] = mapped_column(String(100), index=True)
    aggregate_type: Mapped[str] = mapped_column(String(100))
    aggregate_id: Mapped[str] = mapped_column(String(36), index=True)
    # The event's number within its aggregate: 1, 2, 3, ... in commit order (AggregateSequence).
    # Each user's events are published and applied in this order; created_at, the writer's clock,
    # only decides which user goes first.
    sequence: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending, published, failed, discarded
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The stream entry the relay appended (revision 0006): a broker that comes back from an older
    # snapshot has lost some of them, and the check in reconcile.py finds which.
    stream_id: Mapped[str | None] = mapped_column(String(40))
    # The relay's bookkeeping (revision 0002): a broker error schedules a retry with back-off;
    # after too many attempts the event is parked as "failed" until someone retries it.
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))  # failed attempts so far
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # empty: due at once
    last_error: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        Index("uq_domain_events_aggregate_sequence", "aggregate_type", "aggregate_id", "sequence", unique=True),
        # The relay's claim: which users go first, by their oldest pending events ...
        Index("ix_events_claim", "status", "created_at", "id"),
        # ... then each user's pending events in sequence order, none skipped ...
        Index("ix_events_pending", "aggregate_type", "aggregate_id", "sequence",
              postgresql_where=text("status = 'pending'"), sqlite_where=text("status = 'pending'")),
        # ... except those behind an earlier event of their aggregate that is parked or waits for a
        # retry. Only such events are indexed (revision 0005), usually none: with every event in the
        # index, the planner could read all of an aggregate's events for each event it claimed.
        Index("ix_events_holding", "aggregate_type", "aggregate_id", "sequence",
              postgresql_where=text(HOLDING_EVENTS), sqlite_where=text(HOLDING_EVENTS)),
    )


class RelayLease(Base):
    """One partition of the users (revision 0008): the relay that holds it publishes its users'
    events, and until when. A user's partition is a hash of its key (partition_of, below)."""

    __tablename__ = "relay_leases"

    partition: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    holder: Mapped[str | None] = mapped_column(String(100))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the database's clock


class RelayMember(Base):
    """A relay that is running (revision 0008): it renews `seen_at` at every heartbeat; the
    partitions are shared out among the members seen within a lease's time to live."""

    __tablename__ = "relay_members"

    relay_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


# Each user belongs to one of PARTITIONS partitions, a hash of its key computed by PostgreSQL (the
# low bits: PARTITIONS is a power of two); each partition is leased to one relay (partitions.py).
# Written with literals, not parameters, so that a claim's condition matches the index below.
PARTITIONS = 32


def partition_of(aggregate_type, aggregate_id):
    key = func.hashtextextended(aggregate_type.concat(literal_column("'/'")).concat(aggregate_id),
                                literal_column("0"), type_=BigInteger)
    return key.op("&", return_type=BigInteger)(literal_column(str(PARTITIONS - 1)))


# PostgreSQL (revision 0008): each partition's pending events, oldest first, so that a relay reads
# only its own partitions' oldest events.
Index("ix_events_partition", partition_of(DomainEvent.aggregate_type, DomainEvent.aggregate_id),
      DomainEvent.created_at, DomainEvent.id, postgresql_where=text("status = 'pending'")).ddl_if(dialect="postgresql")
# Alembic compares an expression index by its SQL text, which PostgreSQL rewrites as it stores it
# ("(aggregate_type)::text || '/'::text ..."): it would report this one as changed forever. Its
# definition is revision 0008's; tests/test_partitions.py checks that the claim uses it.
NOT_COMPARED = frozenset({"ix_events_partition"})


def compared(object_, name, type_, reflected, compare_to) -> bool:
    """Alembic's include_object: everything but NOT_COMPARED."""
    return not (type_ == "index" and name in NOT_COMPARED)


class InboxEntry(Base):
    """The consumer's inbox: one row per event it applied. Inserting the row in the same
    transaction as the effect is what makes a second delivery of the event a no-op."""

    __tablename__ = "consumer_inbox"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    stream_id: Mapped[str] = mapped_column(String(40))  # the entry of the first delivery
    deliveries: Mapped[int] = mapped_column(default=1)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The event's aggregate and number (revision 0006; empty on rows from before it): the consumer
    # compares a new event's number with the highest it applied for that user, to notice a gap.
    aggregate_type: Mapped[str | None] = mapped_column(String(100))
    aggregate_id: Mapped[str | None] = mapped_column(String(36))
    sequence: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_consumer_inbox_aggregate", "aggregate_type", "aggregate_id", "sequence"),)


class ScoreSummary(Base):
    """The consumer's read model: per user, the scores it has applied and the latest one.
    No foreign key to users: it belongs to the consuming service, not to the user table's owner."""

    __tablename__ = "score_summaries"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    scores_applied: Mapped[int] = mapped_column(default=0)
    latest_score_id: Mapped[str] = mapped_column(String(36))
    latest_air_score: Mapped[float] = mapped_column(Float)
    latest_event_at: Mapped[datetime] = mapped_column(UTCDateTime)
    latest_sequence: Mapped[int | None] = mapped_column(BigInteger)  # the latest score's event number (0006)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
