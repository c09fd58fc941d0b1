"""The ``server_provision`` operation handler (runs in the worker).

Order: (Hetzner) create the server at Hetzner when the form only recorded what to
create (``facts["hetzner"]``, no ``provider_server_id`` yet: the web request never
calls the API), wait for it to run and record its addresses;
connect over SSH with the bootstrap login (retrying while a new server boots);
then the plan's steps (:mod:`app.provisioning.plan`), each reading facts and
changing only what differs; then the server is marked active with its Docker
and Compose versions, and the one-time bootstrap credentials are erased.

Logins: the first run uses the bootstrap login (a custom server's root or sudo
user and key; a Hetzner server's root with the management key, which Hetzner
installs). Provisioning authorises the management key for root with
key-only login, so later runs (re-provisioning) log in as root with it; every
other operation logs in as the ``keystone`` user.
"""
from __future__ import annotations

import time

from app.extensions import db
from app.models import Organisation, Server
from app.models.base import utcnow
from app.models.enums import OperationKind, ProviderType, ServerStatus
from app.operations import StepFailed, operation_handler, runtime as engine_runtime
from app.providers import cloud_provider
from app.providers.base import ProviderError
from app.providers.keys import ensure_management_key
from app.provisioning import commands as c
from app.provisioning.host import HostIO, ProvisioningError
from app.provisioning.plan import PLAN, Desired, PlanState
from app.remote import AuthenticationFailed, ConnectError, Connection, HostKeyMismatch, InvalidKey

# How long to keep trying SSH: a server Hetzner just created boots for a while;
# a server that should already be up fails fast, so a wrong address or port
# is reported within seconds (the attempts share the engine's connect timeout).
SSH_WAIT_NEW = 300
SSH_WAIT_EXISTING = 12


def _set_status(server: Server, status: ServerStatus) -> None:
    became_unreachable = status == ServerStatus.UNREACHABLE and server.status != status
    server.status = status
    db.session.commit()
    if became_unreachable:
        from app.notifications import notify
        notify(server.organisation_id, "server.unreachable",
               {"server": server.name, "server_id": server.id})


def _create_at_provider(ctx, server: Server, org: Organisation) -> None:
    """Hetzner: create the server the form described (once: it then has a Hetzner id)."""
    from app.providers import ProviderError, cloud_provider

    wanted = (server.facts or {}).get("hetzner") or {}
    with ctx.step("Create the server at Hetzner") as step:
        if not all(wanted.get(k) for k in ("server_type", "image", "location")):
            raise StepFailed("This server has no Hetzner id and no recorded type, image and "
                             "location to create it with.")
        api = cloud_provider(server.provider, app=ctx.runtime.app)
        ctx.runtime.add_secret(server.provider.api_token)
        step.log(f"creating {server.name}: {wanted['server_type']}, {wanted['image']}, "
                 f"{wanted['location']}"
                 + (f", private network {wanted['network_id']}" if wanted.get("network_id") else ""))
        try:
            key_id = api.ensure_ssh_key(org.management_key_public, f"keystone-{org.slug}"[:60])
            created = api.create_server(
                name=server.name, server_type=wanted["server_type"], image=wanted["image"],
                location=wanted["location"], ssh_key_id=key_id,
                network_id=wanted.get("network_id") or None,
                labels={"keystone-organisation": org.slug[:60]})
        except ProviderError as exc:
            raise StepFailed(str(exc)) from None
        server.provider_server_id = created.provider_server_id
        server.public_ip, server.private_ip = created.public_ip, created.private_ip
        db.session.commit()
        step.log(f"Hetzner server {created.provider_server_id} created at {created.public_ip}")


def _wait_for_provider(ctx, server: Server) -> bool:
    """Hetzner: wait until the server runs; record its addresses. True if it just came up."""

    provider = server.provider
    with ctx.step("Wait for the server at Hetzner") as step:
        if not server.provider_server_id:
            raise StepFailed("This server has no Hetzner id: it was never created at Hetzner.")
        api = cloud_provider(provider, app=ctx.runtime.app)
        ctx.runtime.add_secret(provider.api_token)
        try:
            current = api.get_server(server.provider_server_id)
            if current is None:
                raise StepFailed(f"Hetzner server {server.provider_server_id} no longer exists.")
            fresh = current.status != "running"
            if fresh:
                step.log(f"Hetzner reports the server {current.status}; waiting for it to run")
                current = api.wait_until_running(server.provider_server_id, timeout=600)
        except Exception as exc:
            if isinstance(exc, ProviderError):
                raise StepFailed(str(exc)) from None
            raise
        changed = (server.public_ip, server.private_ip) != (current.public_ip, current.private_ip)
        server.public_ip, server.private_ip = current.public_ip, current.private_ip
        db.session.commit()
        msg = f"running at {current.public_ip}" + (f", private {current.private_ip}"
                                                    if current.private_ip else "")
        if changed or fresh:
            step.log(msg)
        else:
            step.unchanged(msg)
        return fresh or not server.provisioned_at


def _connect(ctx, server: Server, wait: float):
    """Connect with the bootstrap login, retrying until ``wait`` s passed; return (step, sudo)."""

    with ctx.step("Connect over SSH", server=server, login="bootstrap") as step:
        pinned_before = server.host_key_fingerprint
        user = server.bootstrap_user or "root"
        step.log(f"connecting to {server.public_ip or server.private_ip}:{server.ssh_port} as "
                 f"{user}" + (f" (host key pinned: {pinned_before})" if pinned_before
                              else " (first contact: the host key will be pinned)"))
        deadline = time.monotonic() + wait
        attempt = 0
        while True:
            attempt += 1
            try:
                conn = step.connection()
                break
            except HostKeyMismatch:
                _set_status(server, ServerStatus.UNREACHABLE)
                raise
            except InvalidKey as exc:
                raise StepFailed(f"The SSH key for {user} cannot be read: {exc}") from None
            except AuthenticationFailed as exc:
                # A brand-new cloud server may accept TCP before its keys are installed.
                if wait < SSH_WAIT_NEW or time.monotonic() >= deadline:
                    _set_status(server, ServerStatus.UNREACHABLE)
                    raise StepFailed(f"Login refused: {exc}") from None
                step.log(f"attempt {attempt}: {exc}")
            except ConnectError as exc:
                if time.monotonic() >= deadline:
                    _set_status(server, ServerStatus.UNREACHABLE)
                    raise StepFailed(f"Could not connect over SSH after {attempt} attempt(s): "
                                     f"{exc}") from None
                step.log(f"attempt {attempt}: {exc}")
            ctx.check_cancelled()
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        db.session.refresh(server)
        is_root = conn.run(c.uid(), timeout=30, pty=False).stdout.strip() == "0"
        sudo = False
        if not is_root:
            if not conn.run(c.sudo_check(), timeout=30, pty=False).ok:
                raise StepFailed(f"{user} is not root and cannot use sudo without a password. "
                                 f"Give Keystone a root login, or allow {user} passwordless sudo.")
            sudo = True
        who = "root" if is_root else f"{user} (with sudo)"
        if pinned_before is None:
            server.facts = dict(server.facts or {}, host_key_pinned="first contact")
            db.session.commit()
            step.log(f"connected as {who}; pinned host key {server.host_key_fingerprint}")
        else:
            step.unchanged(f"connected as {who}; the host key matches the pinned "
                           f"{server.host_key_fingerprint}")
        return sudo


def _fresh_connection_factory(ctx, server: Server, org: Organisation):
    """Opens NEW connections (not pooled) as a user with the management key, host key pinned."""

    factory = engine_runtime.connection_factory or Connection
    host, port = server.public_ip or server.private_ip, int(server.ssh_port or 22)
    key, pinned = org.management_key_private, server.host_key_fingerprint
    timeout = float(ctx.runtime.app.config.get("KEYSTONE_SSH_CONNECT_TIMEOUT", 10))

    def connect_as(user: str):
        conn = factory(host, port, user, key, pinned, connect_timeout=timeout)
        conn.connect()
        return conn
    return connect_as


@operation_handler(OperationKind.SERVER_PROVISION)
def provision_server(ctx) -> None:
    server: Server = ctx.target
    if server is None:
        raise StepFailed("The server no longer exists.")
    org = db.session.get(Organisation, server.organisation_id)
    ensure_management_key(org)
    ctx.runtime.add_secret(org.management_key_private)
    for secret in (server.bootstrap_private_key, server.bootstrap_password):
        ctx.runtime.add_secret(secret)
    provider_type = server.provider.type if server.provider is not None else ProviderType.CUSTOM
    if provider_type == ProviderType.CUSTOM and not server.host_key_fingerprint:
        raise StepFailed("Confirm the server's host-key fingerprint on its page before "
                         "Keystone logs in to it.")
    if server.bootstrap_password and not server.bootstrap_private_key and not server.provisioned_at:
        raise StepFailed("Keystone logs in with SSH keys only: give the one-time login as a "
                         "private key (password logins are not supported).")
    previous_status = server.status
    _set_status(server, ServerStatus.PROVISIONING)
    try:
        new_server = False
        if provider_type == ProviderType.HETZNER:
            if not server.provider_server_id:
                _create_at_provider(ctx, server, org)
            new_server = _wait_for_provider(ctx, server)
        wait = SSH_WAIT_NEW if new_server else SSH_WAIT_EXISTING
        wait = float(ctx.params.get("ssh_wait", wait))
        sudo = _connect(ctx, server, wait)
        state = PlanState(Desired(server.management_user or "keystone", org.management_key_public),
                          connect_as=_fresh_connection_factory(ctx, server, org))
        changed_steps = []
        for title, fn in PLAN:
            ctx.check_cancelled()
            with ctx.step(title, server=server, login="bootstrap") as step:
                io = HostIO(step, sudo=sudo, cancel=ctx.active_cancel_event)
                try:
                    message = fn(io, state)
                except ProvisioningError as exc:
                    raise StepFailed(str(exc)) from None
                if io.changed:
                    changed_steps.append(title)
                    step.log(f"changed: {message}")
                else:
                    step.unchanged(message)
        with ctx.step("Mark the server active") as step:
            results = state.results
            before = (previous_status, server.docker_version, server.compose_version,
                      server.docker_source)
            server.docker_version = results.get("docker_version")
            server.compose_version = results.get("compose_version")
            server.docker_source = results.get("docker_source")
            server.facts = dict(server.facts or {}, os=state.facts.get("pretty"),
                                arch=state.facts.get("arch"), systemd=state.systemd,
                                sshd_ports=state.facts.get("sshd_ports"),
                                compose=results.get("compose"),
                                ufw_path=state.facts.get("ufw_path"))
            # The one-time login is spent: later runs use root + the management key.
            had_bootstrap = bool(server.bootstrap_private_key or server.bootstrap_password)
            server.bootstrap_private_key = None
            server.bootstrap_password = None
            server.bootstrap_user = None
            server.status = ServerStatus.ACTIVE
            if changed_steps or not server.provisioned_at:
                server.provisioned_at = utcnow()
            db.session.commit()
            after = (ServerStatus.ACTIVE, server.docker_version, server.compose_version,
                     server.docker_source)
            summary = (f"active: Docker {server.docker_version} ({server.docker_source}), "
                       f"Compose {server.compose_version}")
            if before != after or had_bootstrap:
                step.log(summary + ("; the one-time login was erased" if had_bootstrap else ""))
                if before != after:
                    changed_steps.append("Mark the server active")
            else:
                step.unchanged(summary)
        ctx.result["changed"] = bool(changed_steps)
        ctx.result["changed_steps"] = changed_steps
        ctx.result["summary"] = ("Changed: " + ", ".join(changed_steps)) if changed_steps \
            else "No changes: the server already matched every step."
    except BaseException:
        db.session.rollback()
        server = db.session.get(Server, server.id)
        if server is not None and server.status == ServerStatus.PROVISIONING:
            server.status = ServerStatus.FAILED
            db.session.commit()
        raise
