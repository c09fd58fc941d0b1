"""Recovery codes of two-factor sign-in (app.two_factor).

Only the SHA-256 of a code is stored: a code is 80 random bits (like an API
token, a fast hash is enough and lookups are an indexed equality). ``used_at``
is set by a compare-and-set UPDATE, so a code works once even under races.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import relationship

from app.models.base import Mapped, db, fk, mapped_column, sa


class RecoveryCode(db.Model):
    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = fk("users.id")
    code_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False, unique=True)
    used_at: Mapped[dt.datetime | None] = mapped_column()

    user = relationship("User", back_populates="recovery_codes")
