"""1. The minimal models: a user and their AI-R scores, typed, linked both ways. source/models.py
grows from this: string UUID keys, timestamps, the other tables, and the cascade that deletes a
user's scores with the user, which section 1 shows as the answer to the failure it triggers here.
Own table names, so the lab can run them next to the real tables."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "minimal_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255))

    scores: Mapped[list[AIRScore]] = relationship(back_populates="user")


class AIRScore(Base):
    __tablename__ = "minimal_scores"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("minimal_users.id"))  # NOT NULL: Mapped[int], not int | None
    air_score: Mapped[float]

    user: Mapped[User] = relationship(back_populates="scores")
