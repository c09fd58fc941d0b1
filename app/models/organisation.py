"""Organisations own everything; users reach them through memberships."""
from __future__ import annotations

from flask_login import UserMixin
from sqlalchemy.orm import relationship
from werkzeug.security import check_password_hash, generate_password_hash

from app.crypto import EncryptedText
from app.models.base import (Mapped, OrgScoped, TimestampMixin, db, enum_column, fk,
                             mapped_column, sa)
from app.models.enums import MembershipRole


class Organisation(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120), nullable=False)
    slug: Mapped[str] = mapped_column(sa.String(120), nullable=False, unique=True)
    # Management keypair: Keystone's own SSH identity on the organisation's servers.
    management_key_public: Mapped[str | None] = mapped_column(sa.Text)
    management_key_private = mapped_column(EncryptedText, nullable=True)
    management_key_fingerprint: Mapped[str | None] = mapped_column(sa.String(100))
    onboarding_state: Mapped[dict] = mapped_column(sa.JSON, default=dict, nullable=False)

    memberships = relationship("Membership", back_populates="organisation",
                               cascade="all, delete-orphan")


class User(UserMixin, TimestampMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(sa.String(120), nullable=False, default="")
    password_hash: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    is_active_flag: Mapped[bool] = mapped_column(default=True, nullable=False)
    # Part of every session's user id: bumping it (logout, password change) ends every
    # session of this user at once, including cookies copied before the logout.
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0",
                                                    nullable=False)

    memberships = relationship("Membership", back_populates="user", cascade="all, delete-orphan")

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password, method="scrypt")
        self.end_sessions()

    def end_sessions(self) -> None:
        """Invalidate every existing session of this user (the caller commits)."""
        self.session_generation = (self.session_generation or 0) + 1

    def get_id(self) -> str:  # flask-login: stored in the session, checked by the loader
        return f"{self.id}:{self.session_generation or 0}"

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def is_active(self) -> bool:  # flask-login
        return self.is_active_flag

    @property
    def organisation(self) -> Organisation | None:
        """The organisation the user works in (the first membership)."""
        return self.memberships[0].organisation if self.memberships else None


class Membership(TimestampMixin, db.Model):
    __tablename__ = "memberships"
    __table_args__ = (sa.UniqueConstraint("organisation_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = fk("organisations.id")
    user_id: Mapped[int] = fk("users.id")
    role: Mapped[MembershipRole] = enum_column(MembershipRole, MembershipRole.MEMBER)

    organisation = relationship("Organisation", back_populates="memberships")
    user = relationship("User", back_populates="memberships")
