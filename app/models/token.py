"""Personal access tokens: the API's credentials (app.api).

Only the SHA-256 of a token is stored (a token is 256 random bits, so a fast
hash is enough and lookups are by an indexed equality); the token itself is
shown once, when it is created. ``prefix`` (the first characters) lets a person
recognise a token in the list without it being usable.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import relationship

from app.models.base import Mapped, OrgScoped, TimestampMixin, db, fk, json_column, mapped_column, sa


class ApiToken(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = fk("organisations.id")
    user_id: Mapped[int] = fk("users.id")
    name: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    prefix: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    token_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False, unique=True)
    scopes: Mapped[list] = json_column(default=list)
    expires_at: Mapped[dt.datetime | None] = mapped_column()
    last_used_at: Mapped[dt.datetime | None] = mapped_column()
    last_used_address: Mapped[str | None] = mapped_column(sa.String(64))
    revoked_at: Mapped[dt.datetime | None] = mapped_column()

    user = relationship("User")
    organisation = relationship("Organisation")
