"""Members of an organisation: invitations, role changes, removal, new organisations.

One function per member-change action (invite, revoke_invitation, accept_invitation,
change_role, remove_member, create_organisation); each records one AuditEvent and
commits. The views (app.blueprints.members) only call these.

Invitations: a 256-bit token in the link, only its SHA-256 kept for lookup; single use,
open for 7 days. The mail goes through the organisation's first enabled email channel
(the SMTP settings of Settings > Notifications) in an RQ job; the link waits for the job
encrypted on the row and is erased once sent. Without an email channel the inviter is
shown the link once to pass on.

Rules the policy (app.policy) cannot see from a role alone live here: only an owner makes,
unmakes or removes an owner, and an organisation always keeps at least one owner.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
from email.message import EmailMessage

import sqlalchemy as sa

from app import audit
from app.extensions import db
from app.models import Invitation, Membership, NotificationChannel, Organisation, User
from app.models.base import utcnow
from app.models.enums import MembershipRole
from app.policy import role_allows

log = logging.getLogger(__name__)

INVITATION_DAYS = 7
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}")
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


class MemberError(ValueError):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _audit(org_id: int, actor: User | None, action: str, target_type: str, target_id: int,
           **detail) -> None:
    # app.audit is the one writer: it adds the client's address (and "via": "api").
    audit.record(action, target_type=target_type, target_id=target_id, organisation_id=org_id,
                 user=actor, detail=detail)


def _role(value) -> MembershipRole:
    try:
        return MembershipRole(value)
    except ValueError:
        raise MemberError("Choose a role from the list.") from None


def _owners(org_id: int) -> int:
    return db.session.execute(sa.select(sa.func.count()).select_from(Membership).where(
        Membership.organisation_id == org_id,
        Membership.role == MembershipRole.OWNER)).scalar_one()


def _check_owner_rule(actor_role, *roles) -> None:
    if MembershipRole.OWNER in roles and not role_allows(actor_role, "org.manage"):
        raise MemberError("Only an owner can make, change or remove an owner.")


def members_of(org_id: int) -> list[Membership]:
    return db.session.execute(sa.select(Membership).join(User).where(
        Membership.organisation_id == org_id).order_by(User.email)).scalars().all()


def open_invitations(org_id: int) -> list[Invitation]:
    return db.session.execute(sa.select(Invitation).where(
        Invitation.organisation_id == org_id, Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None), Invitation.expires_at > utcnow())
        .order_by(Invitation.id.desc())).scalars().all()


def email_channel(org_id: int) -> NotificationChannel | None:
    return db.session.execute(sa.select(NotificationChannel).where(
        NotificationChannel.organisation_id == org_id, NotificationChannel.kind == "email",
        NotificationChannel.enabled.is_(True)).order_by(NotificationChannel.id)
        .limit(1)).scalar_one_or_none()


# --------------------------------------------------------------------------- invitations

def invite(org_id: int, actor: User, actor_role, email: str, role,
           link_for) -> tuple[Invitation, str, bool]:
    """(invitation, link, queued): ``link_for(token)`` builds the absolute accept URL.
    ``queued`` is False when the organisation has no email channel: show the link."""
    email = (email or "").strip().lower()
    if not EMAIL_RE.fullmatch(email) or len(email) > 254:
        raise MemberError("Enter an email address.")
    role = _role(role)
    _check_owner_rule(actor_role, role)
    already = db.session.execute(sa.select(Membership.id).join(User).where(
        Membership.organisation_id == org_id, User.email == email)).first()
    if already:
        raise MemberError(f"{email} is already a member.")
    token = secrets.token_urlsafe(32)
    link = link_for(token)
    channel = email_channel(org_id)
    row = Invitation(organisation_id=org_id, email=email, role=role,
                     token_hash=hash_token(token), invited_by_id=actor.id,
                     expires_at=utcnow() + dt.timedelta(days=INVITATION_DAYS),
                     mail_link=link if channel is not None else None,
                     mail_status="pending" if channel is not None else "not_sent")
    db.session.add(row)
    db.session.flush()
    _audit(org_id, actor, "invitation.created", "invitation", row.id, email=email,
           role=role.value)
    db.session.commit()
    if channel is not None:
        _enqueue(row.id)
    return row, link, channel is not None


def _enqueue(invitation_id: int) -> bool:
    from flask import current_app
    try:
        from rq import Queue

        from app.operations import logstream
        Queue(current_app.config["RQ_QUEUE"], connection=logstream.redis_client()).enqueue(
            "app.jobs.send_invitation", int(invitation_id), job_timeout=60)
        return True
    except Exception as exc:  # noqa: BLE001 - Redis away: the page shows mail status pending
        log.warning("invitation %s: could not enqueue (%s)", invitation_id, type(exc).__name__)
        return False


def invitation_message(row: Invitation, from_address: str, link: str) -> EmailMessage:
    inviter = row.invited_by.name or row.invited_by.email if row.invited_by else "Someone"
    msg = EmailMessage()
    msg["Subject"] = f"[Keystone] You are invited to {row.organisation.name}"
    msg["From"] = from_address
    msg["To"] = row.email
    msg.set_content(
        f"{inviter} invited you to join {row.organisation.name} on Keystone as "
        f"{row.role.value}.\n\nAccept the invitation (sign up or sign in):\n{link}\n\n"
        f"The link works once and expires on {row.expires_at:%Y-%m-%d %H:%M} UTC.\n")
    return msg


def send_invitation_mail(invitation_id: int) -> str:
    """The job: mail the link through the email channel, then erase it. Never raises."""
    from app.notifications.senders import SendError, send_mail
    row = db.session.get(Invitation, invitation_id)
    if row is None or row.mail_link is None:
        return "nothing"
    if not row.is_open():
        row.mail_link, row.mail_status = None, "not_sent"
        db.session.commit()
        return "closed"
    channel = email_channel(row.organisation_id)
    if channel is None:
        row.mail_status = "no_channel"
        db.session.commit()
        return "no_channel"
    config = channel.config or {}
    try:
        send_mail(config, channel.secrets or {},
                  invitation_message(row, config["from_address"], row.mail_link))
    except SendError as exc:
        row.mail_status = "failed"
        log.warning("invitation %s: %s", invitation_id, exc)
        db.session.commit()
        return "failed"
    row.mail_link, row.mail_status = None, "sent"
    db.session.commit()
    return "sent"


def revoke_invitation(row: Invitation, actor: User) -> None:
    if row.revoked_at is None and row.accepted_at is None:
        row.revoked_at = utcnow()
        row.mail_link = None
        _audit(row.organisation_id, actor, "invitation.revoked", "invitation", row.id,
               email=row.email)
        db.session.commit()


def find_invitation(token: str) -> Invitation | None:
    """The open invitation of a token from a link, or None (unknown, used, revoked, expired)."""
    if not token or not TOKEN_RE.fullmatch(token):
        return None
    row = db.session.execute(sa.select(Invitation).where(
        Invitation.token_hash == hash_token(token))).scalar_one_or_none()
    return row if row is not None and row.is_open() else None


def accept_invitation(row: Invitation, user: User) -> Membership:
    """``user`` joins with the invited role; the invitation is used up either way."""
    if not row.is_open():
        raise MemberError("This invitation is no longer valid.")
    row.accepted_at, row.accepted_by_id, row.mail_link = utcnow(), user.id, None
    membership = db.session.execute(sa.select(Membership).where(
        Membership.organisation_id == row.organisation_id,
        Membership.user_id == user.id)).scalar_one_or_none()
    if membership is None:
        membership = Membership(organisation_id=row.organisation_id, user_id=user.id,
                                role=row.role)
        db.session.add(membership)
        db.session.flush()
        _audit(row.organisation_id, user, "member.added", "membership", membership.id,
               email=user.email, role=row.role.value, invitation_id=row.id)
    db.session.commit()
    return membership


# --------------------------------------------------------------------------- members

def change_role(membership: Membership, role, actor: User, actor_role) -> None:
    role = _role(role)
    before = membership.role
    if role == before:
        return
    _check_owner_rule(actor_role, role, before)
    if before == MembershipRole.OWNER and _owners(membership.organisation_id) <= 1:
        raise MemberError("The last owner cannot be demoted: make someone else an owner first.")
    membership.role = role
    _audit(membership.organisation_id, actor, "member.role_changed", "membership",
           membership.id, email=membership.user.email, before=before.value, after=role.value)
    db.session.commit()


def remove_member(membership: Membership, actor: User, actor_role) -> None:
    """Remove a member (or leave, when ``actor`` is the member). The member's open sessions
    lose the organisation at their next request (app.scoping reads memberships per request);
    their API tokens for it stop working too (app.api.tokens.authenticate)."""
    if membership.user_id != actor.id:
        _check_owner_rule(actor_role, membership.role)
    if membership.role == MembershipRole.OWNER and _owners(membership.organisation_id) <= 1:
        raise MemberError("The last owner cannot leave or be removed: make someone else an "
                          "owner first, or delete the organisation.")
    _audit(membership.organisation_id, actor, "member.removed", "membership", membership.id,
           email=membership.user.email, role=membership.role.value)
    db.session.delete(membership)
    db.session.commit()


# --------------------------------------------------------------------------- organisations

def create_organisation(user: User, name: str) -> Organisation:
    """A new organisation with ``user`` as its owner."""
    from app.accounts import unique_slug
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise MemberError("Name the organisation (at most 120 characters).")
    org = Organisation(name=name, slug=unique_slug(name))
    membership = Membership(organisation=org, user=user, role=MembershipRole.OWNER)
    db.session.add_all([org, membership])
    db.session.flush()
    _audit(org.id, user, "organisation.created", "organisation", org.id, name=name)
    db.session.commit()
    return org


def rename_organisation(org: Organisation, name: str, actor: User) -> None:
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise MemberError("Name the organisation (at most 120 characters).")
    before, org.name = org.name, name
    _audit(org.id, actor, "organisation.renamed", "organisation", org.id, before=before,
           after=name)
    db.session.commit()


def delete_organisation(org: Organisation, actor: User, confirm: str) -> None:
    """Delete the organisation and everything it holds in Keystone. Refused while it has
    servers (delete them first: that stops what runs on them and, for Hetzner, the bill)."""
    from app.models import Server
    from app.models.enums import ServerStatus
    if (confirm or "").strip() != org.name:
        raise MemberError("Type the organisation's name to confirm.")
    servers = db.session.execute(sa.select(sa.func.count()).select_from(Server).where(
        Server.organisation_id == org.id, Server.status != ServerStatus.DELETED)).scalar_one()
    if servers:
        raise MemberError(f"Delete the organisation's {servers} server(s) first.")
    log.info("organisation %s deleted by user %s", org.id, actor.id)
    db.session.execute(sa.delete(Organisation).where(Organisation.id == org.id))
    db.session.commit()
