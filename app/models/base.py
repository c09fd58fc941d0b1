"""Shared column helpers for the models."""
from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def enum_type(enum_cls) -> sa.Enum:
    """A string column limited to the enum's values by a CHECK constraint."""
    return sa.Enum(enum_cls, native_enum=False, create_constraint=True, length=32,
                   validate_strings=True, name=enum_cls.__name__.lower(),
                   values_callable=lambda e: [m.value for m in e])


def enum_column(enum_cls, default=None, nullable: bool = False) -> Any:
    return mapped_column(enum_type(enum_cls), default=default, nullable=nullable,
                         server_default=default.value if default is not None else None)


def fk(target: str, *, nullable: bool = False, ondelete: str | None = "CASCADE",
       use_alter: bool = False) -> Any:
    """A foreign key column with its index (every foreign key is indexed).

    `use_alter` marks the few keys that close a cycle (an environment points at
    its scheduler service, replica and current artifact, which point back at it);
    the migration adds those after both tables exist.
    """
    return mapped_column(sa.ForeignKey(target, ondelete=ondelete, use_alter=use_alter),
                         nullable=nullable, index=True)


def json_column(default=dict) -> Any:
    return mapped_column(sa.JSON, default=default, nullable=False)


class TimestampMixin:
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow, nullable=False)


class OrgScoped:
    """Models that can be fetched for an organisation.

    `org_path` names the relationship chain from the model to a model with an
    `organisation_id` column; `app.scoping.get_for_org_or_404` follows it.
    """

    org_path: tuple[str, ...] = ()


__all__ = ["db", "sa", "Mapped", "mapped_column", "utcnow", "enum_column", "fk",
           "json_column", "TimestampMixin", "OrgScoped"]
