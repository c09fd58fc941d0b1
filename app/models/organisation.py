"""Organisations own everything; users reach them through memberships."""
from __future__ import annotations

import datetime as dt

from flask_login import UserMixin
from sqlalchemy.orm import relationship
from werkzeug.security import check_password_hash, generate_password_hash

from app.crypto import EncryptedText
from app.models.base import (Mapped, OrgScoped, TimestampMixin, db, enum_column, fk,
                             mapped_column, sa, utcnow)
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
    # Every member must have two-factor sign-in (app.two_factor): one without it is sent to
    # enrolment after signing in and can do nothing else until enrolled.
    require_two_factor: Mapped[bool] = mapped_column(default=False, server_default="0",
                                                     nullable=False)

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

    # Two-factor sign-in (app.two_factor): the TOTP secret (encrypted at rest; set while
    # enrolling, kept once confirmed), when it was confirmed (None: not enrolled) and the
    # last accepted time step (a code is accepted once: no replay inside its window).
    totp_secret = mapped_column(EncryptedText, nullable=True)
    totp_enabled_at: Mapped[dt.datetime | None] = mapped_column()
    totp_last_step: Mapped[int | None] = mapped_column(sa.BigInteger)

    memberships = relationship("Membership", back_populates="user", cascade="all, delete-orphan")
    recovery_codes = relationship("RecoveryCode", back_populates="user",
                                  cascade="all, delete-orphan", passive_deletes=True)

    @property
    def two_factor_enabled(self) -> bool:
        return self.totp_enabled_at is not None

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
        """The organisation the user works in: inside a request of this user, the current
        one (chosen in the session, or the API token's); elsewhere the first membership."""
        from app.scoping import membership_of
        m = membership_of(self)
        return m.organisation if m is not None else None


class Membership(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "memberships"
    __table_args__ = (sa.UniqueConstraint("organisation_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = fk("organisations.id")
    user_id: Mapped[int] = fk("users.id")
    role: Mapped[MembershipRole] = enum_column(MembershipRole, MembershipRole.VIEWER)

    organisation = relationship("Organisation", back_populates="memberships")
    user = relationship("User", back_populates="memberships")


class Invitation(OrgScoped, db.Model):
    """An invitation to join an organisation with a role, by email. Only the SHA-256 of
    its single-use token is kept; it expires after 7 days (app.members)."""
    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = fk("organisations.id")
    email: Mapped[str] = mapped_column(sa.String(254), nullable=False)
    role: Mapped[MembershipRole] = enum_column(MembershipRole, MembershipRole.VIEWER)
    token_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False, unique=True)
    invited_by_id: Mapped[int | None] = fk("users.id", nullable=True, ondelete="SET NULL")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(nullable=False)
    accepted_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    accepted_by_id: Mapped[int | None] = fk("users.id", nullable=True, ondelete="SET NULL")
    revoked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    # The link with the token, encrypted, only until the mail job has sent it (then NULL).
    mail_link = mapped_column(EncryptedText, nullable=True)
    mail_status: Mapped[str] = mapped_column(sa.String(32), nullable=False, default="pending",
                                             server_default="pending")

    organisation = relationship("Organisation")
    invited_by = relationship("User", foreign_keys=[invited_by_id])

    def is_open(self, now: dt.datetime | None = None) -> bool:
        now = now or utcnow()
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > now
