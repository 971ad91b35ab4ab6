"""5. Ordered relays that scale: each user belongs to one of PARTITIONS partitions (a hash of its
key), and each partition is leased to one relay at a time. A relay publishes only the users of the
partitions it holds, each user's events in sequence order, so several relay processes keep every
user's order without waiting for each other batch by batch (Kafka's partitions by key, in a table).
A user's partition: models.partition_of.

- Heartbeat: every `heartbeat` seconds a relay renews its membership and its leases, on the
  database's clock (app servers' clocks may disagree).
- Fair share: the relays seen within `ttl` share the partitions out, in the order of their ids. A
  relay above its share gives the surplus back, chosen so that it gives about its share of its
  pending events too (a few busy users must not all stay with one relay); one below takes free or
  expired partitions, chosen the same way. A relay that joins has its share within about two heartbeats: the rebalance.
- Take-over: a relay that dies stops renewing. Its leases expire `ttl` after its last heartbeat, and
  the others take them at their next one: within about ttl + heartbeat.
- Fence: a batch locks its relay's lease rows (FOR SHARE, outbox_claims.py) until it commits, so a
  partition changes hands only between batches, and the next holder sees the last one's marks.

PostgreSQL only: on SQLite one relay at a time holds the write lock and needs no lease.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Interval, bindparam, delete, func, literal_column, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from .database import Database
from .models import PARTITIONS, DomainEvent, RelayLease, RelayMember, partition_of

LEASES, MEMBERS = RelayLease.__table__.c, RelayMember.__table__.c


@dataclass(frozen=True)
class LeaseSettings:
    heartbeat: float = 0.5  # renewed at the first batch this long after the last (the publisher looks as often)
    ttl: float = 3.0  # a lease not renewed for this long is free to take


def new_relay_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


_LATER = func.now() + bindparam("ttl", type_=Interval)
_SEED = insert(RelayLease).values([{"partition": p} for p in range(PARTITIONS)]).on_conflict_do_nothing()
_HEARTBEAT = (insert(RelayMember).values(relay_id=bindparam("me"), seen_at=func.now())
              .on_conflict_do_update(index_elements=[MEMBERS.relay_id], set_={"seen_at": func.now()}))
_FORGET_SILENT = delete(RelayMember).where(MEMBERS.seen_at < func.now() - bindparam("ttl", type_=Interval))
_MEMBERS = select(MEMBERS.relay_id).order_by(MEMBERS.relay_id)
_RENEW = (update(RelayLease).where(LEASES.holder == bindparam("me")).values(expires_at=_LATER)
          .returning(LEASES.partition))
_GIVE_BACK = (update(RelayLease)
              .where(LEASES.holder == bindparam("me"), LEASES.partition.in_(bindparam("surplus", expanding=True)))
              .values(holder=None, expires_at=None))
_IS_FREE = or_(LEASES.holder.is_(None), LEASES.expires_at < func.now())
_FREE = select(LEASES.partition).where(LEASES.partition < PARTITIONS, _IS_FREE).order_by(LEASES.partition)
_TAKE = (update(RelayLease)
         .where(LEASES.partition.in_(
             select(LEASES.partition).where(LEASES.partition.in_(bindparam("chosen", expanding=True)), _IS_FREE)
             .with_for_update(skip_locked=True).scalar_subquery()))  # another relay taking one: pass it over
         .values(holder=bindparam("me"), expires_at=_LATER).returning(LEASES.partition))
_PARTITION = partition_of(DomainEvent.aggregate_type, DomainEvent.aggregate_id)
_PENDING = (  # how many events wait in each of :held (read only when partitions change hands)
    select(_PARTITION, func.count())
    .where(DomainEvent.status == literal_column("'pending'"), _PARTITION.in_(bindparam("held", expanding=True)))
    .group_by(_PARTITION)
)
_LEAVE = update(RelayLease).where(LEASES.holder == bindparam("me")).values(holder=None, expires_at=None)


def fair_share(members: list[str], me: str) -> int:
    """How many partitions `me` should hold: PARTITIONS split as evenly as the members allow."""
    rank = members.index(me)
    return PARTITIONS // len(members) + (1 if rank < PARTITIONS % len(members) else 0)


def split_by_load(held: list[int], pending: dict[int, int], keep: int) -> tuple[list[int], list[int]]:
    """Which `keep` of the held partitions to keep and which to give back, so that each side gets
    about its share of their pending events: heaviest first, each to the side further below its
    share that still has room."""
    total, sides = sum(pending.get(p, 0) for p in held), {"keep": [], "give": []}
    room = {"keep": keep, "give": len(held) - keep}
    share = {side: total * room[side] / len(held) for side in sides}
    for partition in sorted(held, key=lambda p: (-pending.get(p, 0), p)):
        side = max((s for s in sides if room[s]),
                   key=lambda s: share[s] - sum(pending.get(p, 0) for p in sides[s]))
        sides[side].append(partition)
        room[side] -= 1
    return sorted(sides["keep"]), sorted(sides["give"])


class Partitions:
    """One relay's leases. relay_batch calls `refresh` when a heartbeat is due; `held` is what it
    held after the last one (the claim itself checks the leases again, in the database)."""

    def __init__(self, relay_id: str | None = None, settings: LeaseSettings | None = None) -> None:
        self.relay_id = relay_id or new_relay_id()
        self.settings = settings or LeaseSettings()
        self.held: tuple[int, ...] = ()
        self._renewed = float("-inf")

    @classmethod
    def of(cls, db: Database) -> Partitions:
        """The relay that publishes through this Database (its engine): one identity per engine."""
        return _BY_DATABASE.setdefault(db, cls())

    def heartbeat_due(self) -> bool:
        return time.monotonic() - self._renewed >= self.settings.heartbeat

    async def refresh(self, db: Database) -> tuple[int, ...]:
        """Heartbeat, renew this relay's leases, then give back or take partitions up to its fair share."""
        me, ttl = self.relay_id, timedelta(seconds=self.settings.ttl)
        async with db.sessions.begin() as session:
            await session.execute(_SEED)  # the lease rows exist, whoever created the tables
            await session.execute(_HEARTBEAT, {"me": me})
            await session.execute(_FORGET_SILENT, {"ttl": ttl})
            share = fair_share(list((await session.scalars(_MEMBERS)).all()), me)
            held = sorted((await session.scalars(_RENEW, {"me": me, "ttl": ttl})).all())
            if len(held) > share:
                pending = dict((await session.execute(_PENDING, {"held": held})).all())
                held, surplus = split_by_load(held, pending, share)
                await session.execute(_GIVE_BACK, {"me": me, "surplus": surplus})
            elif len(held) < share and (free := list((await session.scalars(_FREE)).all())):
                # As many as its share lacks, with about their share of the free partitions' events.
                pending = dict((await session.execute(_PENDING, {"held": free})).all())
                chosen, _ = split_by_load(free, pending, min(share - len(held), len(free)))
                held += (await session.scalars(_TAKE, {"me": me, "ttl": ttl, "chosen": chosen})).all()
        self.held, self._renewed = tuple(sorted(held)), time.monotonic()
        return self.held

    async def leave(self, db: Database) -> None:
        """Give every partition back and leave the members, so the others take over at once."""
        async with db.sessions.begin() as session:
            await session.execute(_LEAVE, {"me": self.relay_id})
            await session.execute(delete(RelayMember).where(MEMBERS.relay_id == self.relay_id))
        self.held, self._renewed = (), float("-inf")


_BY_DATABASE: weakref.WeakKeyDictionary[Database, Partitions] = weakref.WeakKeyDictionary()
