"""Register the local sandbox as an organisation's servers, registry and git host.

The onboarding wizard offers the sandbox when Docker is available, so a person
can try Keystone without a cloud account. Sandbox servers are handed over like
a cloud provider hands over a server: root login by key. Their host keys are
pinned from what the sandbox itself generated (it made them, locally), and the
root key is kept encrypted as the one-time bootstrap login for provisioning.
"""
from __future__ import annotations

import re

import sqlalchemy as sa

from app.extensions import db
from app.models import Organisation, Provider, Registry, Server
from app.models.enums import ProviderType, RegistryType, ServerStatus


def sandbox_name_for(org: Organisation, base: str) -> str:
    """The organisation's own sandbox: ``BASE-SLUG-ID`` (its containers, ports, registry and
    git host are never another organisation's). The slug is lower-case letters, digits and
    dashes; the id keeps two organisations whose slugs were cut short apart."""
    slug = re.sub(r"[^a-z0-9-]+", "-", (org.slug or "org").lower()).strip("-")[:24] or "org"
    return f"{base[:20]}-{slug}-{int(org.id)}"


def organisation_sandbox(org: Organisation, base: str) -> str:
    """The name of the sandbox this organisation uses: the one it started (recorded in its
    onboarding state), else the one it would start."""
    recorded = ((org.onboarding_state or {}).get("sandbox") or {}).get("name")
    return recorded or sandbox_name_for(org, base)


def register_sandbox(org: Organisation, info) -> list[Server]:
    provider = db.session.execute(
        sa.select(Provider).where(Provider.organisation_id == org.id,
                                  Provider.type == ProviderType.SANDBOX)).scalar_one_or_none()
    if provider is None:
        provider = Provider(organisation=org, name="local sandbox", type=ProviderType.SANDBOX,
                            config={"sandbox": info.name})
        db.session.add(provider)
    servers = []
    for index, s in enumerate(info.servers, start=1):
        name = f"sandbox-{index}"
        server = db.session.execute(
            sa.select(Server).where(Server.organisation_id == org.id, Server.name == name)
        ).scalar_one_or_none()
        if server is None:
            server = Server(organisation=org, provider=provider, name=name,
                            status=ServerStatus.NEW)
            db.session.add(server)
        server.public_ip = s.host
        server.ssh_port = s.ssh_port
        server.private_ip = s.private_ip
        server.host_key_fingerprint = s.host_key_fingerprint
        server.bootstrap_user = s.user
        server.bootstrap_private_key = s.root_key_path.read_text()
        server.facts = dict(server.facts or {}, sandbox=True, http_port=s.http_port,
                            https_port=s.https_port)
        if getattr(info, "images", None):  # stand-in service images in the sandbox registry
            server.facts = dict(server.facts, images=dict(info.images))
        servers.append(server)
    registry = db.session.execute(
        sa.select(Registry).where(Registry.organisation_id == org.id,
                                  Registry.name == "sandbox")).scalar_one_or_none()
    if registry is None:
        registry = Registry(organisation=org, name="sandbox", type=RegistryType.GENERIC)
        db.session.add(registry)
    registry.url = info.registry.url
    registry.username = info.registry.username
    registry.password = info.registry.password
    state = dict(org.onboarding_state or {})
    state["sandbox"] = {"status": "ready", "name": info.name,
                        "repository_url": info.git.sample_repo_url,
                        "http_port": info.servers[0].http_port if info.servers else None}
    org.onboarding_state = state
    db.session.commit()
    return servers


def apply_sandbox_build_defaults(env, servers) -> bool:
    """An environment deployed on sandbox servers builds FROM the sandbox's php-base stand-in.

    The default base image (serversideup/php on Docker Hub) cannot be pulled from the
    sandbox (no public registry is reachable), so unless the person chose a base image,
    use the stand-in the sandbox pushed to its registry, and that registry (builds log in
    to it, so FROM can pull). Returns whether anything changed.
    """
    facts = [(s.facts or {}) for s in servers]
    if not facts or not all(f.get("sandbox") for f in facts):
        return False
    base = ((facts[0].get("images") or {}).get("php-base"))
    config = dict(env.build_config or {})
    if not base or config.get("base_image"):
        return False
    config["base_image"] = base
    env.build_config = config
    if env.registry_id is None:
        registry = db.session.execute(
            sa.select(Registry).where(Registry.organisation_id == env.application.organisation_id,
                                      Registry.name == "sandbox")).scalar_one_or_none()
        if registry is not None:
            env.registry_id = registry.id
    db.session.flush()
    return True
