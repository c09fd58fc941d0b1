"""Roles and permissions: the one permission matrix, and the one decorator views use.

Every web view and every API endpoint declares the permission it needs:

* web views with ``@requires("deploy")`` under ``@bp.route``;
* API endpoints with ``route(..., permission="deploy")`` (app.api.core), which calls
  :func:`authorize` the same way.

No view decides access inline. :func:`check_declared` runs at app start (create_app) and
refuses to build an app in which an endpoint has no declared permission, so a new route
without a policy fails every test, and tests/security/test_roles.py walks the whole URL
map for each role against :data:`MATRIX`.

The member's role is read from the database on every request (app.scoping.current_membership),
never cached in the session: a removed member or a changed role takes effect at the next request.
"""
from __future__ import annotations

import functools

from flask import abort
from flask_login import current_user

from app.models.enums import MembershipRole

OWNER, ADMIN, DEPLOYER, VIEWER = (MembershipRole.OWNER, MembershipRole.ADMIN,
                                  MembershipRole.DEPLOYER, MembershipRole.VIEWER)
ROLES = (OWNER, ADMIN, DEPLOYER, VIEWER)

# Pseudo-permissions: no membership needed.
PUBLIC = "public"        # anyone, signed in or not (sign-in, sign-up, webhooks, the API document)
SIGNED_IN = "signed_in"  # any signed-in user (sign out, switch or create an organisation)

# The matrix: permission -> the roles that hold it.
MATRIX: dict[str, frozenset] = {
    # See the organisation's applications, environments, servers, services, operations,
    # logs and settings pages -- never a secret value. Own API tokens.
    "read": frozenset(ROLES),
    # Start deploys and rollbacks, cancel operations, run one-off commands, scale processes,
    # take a backup now.
    "deploy": frozenset({OWNER, ADMIN, DEPLOYER}),
    # Set, edit, delete and bulk-edit environment variables (secret values stay hidden).
    "variables.edit": frozenset({OWNER, ADMIN, DEPLOYER}),
    # See a secret value: reveal a variable, export a .env with secrets, download a backup.
    "secrets.reveal": frozenset({OWNER, ADMIN}),
    # Servers and providers: create, provision, confirm host keys, delete.
    "servers.manage": frozenset({OWNER, ADMIN}),
    # Container registries.
    "registries.manage": frozenset({OWNER, ADMIN}),
    # Applications, environments, services, slices, attachments, domains, deploy hooks,
    # backup targets and restores, the onboarding wizard's actions.
    "resources.manage": frozenset({OWNER, ADMIN}),
    # Notification channels.
    "notifications.manage": frozenset({OWNER, ADMIN}),
    # Invite members, revoke invitations, change roles, remove members.
    "members.manage": frozenset({OWNER, ADMIN}),
    # Read the audit log (and export it as CSV); require two-factor sign-in of every member.
    "audit.read": frozenset({OWNER, ADMIN}),
    "security.manage": frozenset({OWNER, ADMIN}),
    # Make someone an owner, rename or delete the organisation.
    "org.manage": frozenset({OWNER}),
}
PERMISSIONS = tuple(MATRIX)

# What the README's table says about each permission (rendered by docs and the members page).
DESCRIPTIONS = {
    "read": "See everything in the organisation, never a secret value",
    "deploy": "Deploy, roll back, cancel operations, run commands, scale, back up now",
    "variables.edit": "Set, edit and delete environment variables",
    "secrets.reveal": "Reveal secret values, export .env with secrets, download backups",
    "servers.manage": "Add, provision and delete servers and providers",
    "registries.manage": "Add and delete container registries",
    "resources.manage": "Applications, environments, services, attachments, hooks, restores",
    "notifications.manage": "Notification channels",
    "members.manage": "Invite, change roles, remove members",
    "audit.read": "Read and export the audit log",
    "security.manage": "Require two-factor sign-in for every member",
    "org.manage": "Make owners, rename or delete the organisation",
}

# A role may put a scope on an API token when it holds this permission.
TOKEN_SCOPE_PERMISSION = {"read": "read", "deploy": "deploy", "admin": "secrets.reveal"}

# Endpoints Flask itself registers.
BUILTIN_PUBLIC = frozenset({"static"})


def role_allows(role, permission: str) -> bool:
    if permission == PUBLIC or permission == SIGNED_IN:
        return True
    try:
        role = MembershipRole(role)
    except ValueError:
        return False
    return role in MATRIX[permission]


def current_role():
    """The signed-in user's role in the current organisation (read afresh per request)."""
    from app.scoping import current_membership
    membership = current_membership()
    return membership.role if membership is not None else None


def can(permission: str) -> bool:
    """For templates and views that show or hide a button: never the gate itself."""
    if permission == PUBLIC:
        return True
    if not current_user.is_authenticated:
        return False
    if permission == SIGNED_IN:
        return True
    role = current_role()
    return role is not None and role_allows(role, permission)


def authorize(permission: str) -> None:
    """Abort 403 unless the current member holds ``permission`` (web views; the API's
    route wrapper answers its own JSON 403 from :func:`can`)."""
    if not can(permission):
        abort(403)


def _known(permission: str) -> str:
    if permission not in MATRIX and permission not in (PUBLIC, SIGNED_IN):
        raise ValueError(f"unknown permission {permission!r}: add it to app.policy.MATRIX")
    return permission


def requires(permission: str):
    """Declare and enforce a web view's permission. Signs the visitor in first (like
    flask-login's ``login_required``) unless the permission is PUBLIC."""
    _known(permission)

    def deco(fn):
        @functools.wraps(fn)
        def view(*args, **kwargs):
            if permission != PUBLIC:
                if not current_user.is_authenticated:
                    from app.extensions import login_manager
                    return login_manager.unauthorized()
                authorize(permission)
            return fn(*args, **kwargs)

        view.keystone_permission = permission
        return view
    return deco


def mark(view, permission: str):
    """Record ``permission`` on a view that enforces it itself (the API's route wrapper)."""
    view.keystone_permission = _known(permission)
    return view


def permission_of(app, endpoint: str) -> str | None:
    if endpoint in BUILTIN_PUBLIC:
        return PUBLIC
    return getattr(app.view_functions.get(endpoint), "keystone_permission", None)


def undeclared(app) -> list[str]:
    return sorted(e for e in app.view_functions if permission_of(app, e) is None)


def check_declared(app) -> None:
    """Refuse an app with an endpoint that declares no permission."""
    missing = undeclared(app)
    if missing:
        raise RuntimeError("These endpoints declare no permission (app.policy.requires): "
                           + ", ".join(missing))


def template_globals() -> dict:
    return {"can": can, "current_role": current_role}
