"""Provider operations (worker only): ``host_key_scan``, ``provider_sync``, ``server_delete``.

``host_key_scan`` reads the SSH host key a custom server presents. No login is attempted (see :func:`app.providers.custom.probe_host_key`). The
fingerprint is recorded in ``server.facts["presented_host_key"]`` for the
person to compare and confirm on the host-key page; nothing is pinned here.
Whatever went wrong, the message is the same (no port scanner).
"""
from __future__ import annotations

from app.extensions import db
from app.models import Server
from app.models.enums import OperationKind, ServerStatus
from app.operations import StepFailed, operation_handler
from app.providers.base import ProviderError
from app.providers.custom import probe_host_key


@operation_handler(OperationKind.HOST_KEY_SCAN)
def scan_host_key(ctx) -> None:
    server: Server | None = ctx.target
    if server is None:
        raise StepFailed("The server no longer exists.")
    host, port = server.public_ip or server.private_ip, int(server.ssh_port or 22)
    with ctx.step("Read the SSH host key (no login)") as step:
        step.log(f"connecting to {host}:{port}; the key exchange stops before any credential "
                 f"is sent")
        facts = dict(server.facts or {})
        try:
            presented = probe_host_key(host, port).fingerprint
        except ProviderError as exc:
            facts.pop("presented_host_key", None)
            server.facts = facts
            db.session.commit()
            raise StepFailed(str(exc)) from None
        server.facts = dict(facts, presented_host_key=presented)
        db.session.commit()
        ctx.result["fingerprint"] = presented
        step.log(f"{host}:{port} presents {presented}")


# --------------------------------------------------------------------------- Hetzner

def _api(ctx, provider):
    from app.providers import cloud_provider
    ctx.runtime.add_secret(provider.api_token)
    return cloud_provider(provider, app=ctx.runtime.app)


@operation_handler(OperationKind.PROVIDER_SYNC)
def sync_provider(ctx) -> None:
    """Check a Hetzner token and record the server types, images, locations and networks
    it offers in ``provider.config["choices"]`` (the create-server form offers those)."""
    import datetime as dt

    from app.models import Provider

    provider: Provider | None = ctx.target
    if provider is None:
        raise StepFailed("The provider no longer exists.")
    api = _api(ctx, provider)
    with ctx.step("Check the API token with Hetzner") as step:
        try:
            api.verify()
        except ProviderError as exc:
            provider.config = dict(provider.config or {}, token_ok=False)
            db.session.commit()
            raise StepFailed(str(exc)) from None
        step.log("Hetzner accepted the token")
    with ctx.step("List server types, images, locations and networks") as step:
        try:
            choices = {kind: [[c.name, c.label, c.detail] for c in fetch()]
                       for kind, fetch in (("server_types", api.server_types),
                                           ("images", api.images),
                                           ("locations", api.locations),
                                           ("networks", api.networks))}
        except ProviderError as exc:
            raise StepFailed(str(exc)) from None
        provider.config = dict(provider.config or {}, token_ok=True, choices=choices,
                               synced_at=dt.datetime.now(dt.timezone.utc).isoformat())
        db.session.commit()
        step.log(", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in choices.items()))


@operation_handler(OperationKind.SERVER_DELETE)
def delete_server(ctx) -> None:
    """Delete the server at Hetzner (when it was created there), then Keystone's row."""
    server: Server | None = ctx.target
    if server is None:
        ctx.result["summary"] = "The server was already removed."
        return
    name = server.name
    if server.provider is not None and server.provider_server_id and \
            server.provider.type.value == "hetzner":
        with ctx.step("Delete the server at Hetzner") as step:
            try:
                _api(ctx, server.provider).delete_server(server.provider_server_id)
            except ProviderError as exc:
                server.status = ServerStatus(ctx.params.get("previous_status") or "failed")
                db.session.commit()
                raise StepFailed(str(exc)) from None
            step.log(f"Hetzner server {server.provider_server_id} deleted")
    with ctx.step("Remove the server from Keystone") as step:
        db.session.delete(server)
        db.session.commit()
        step.log(f"{name} removed")
    ctx.result["summary"] = f"{name} removed."
