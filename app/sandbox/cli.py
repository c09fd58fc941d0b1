"""`keystone sandbox up | status | down`: local servers for trying Keystone.

Registered by the app foundation with ``app.cli.add_command(sandbox)``; also
runnable without the app as ``python -m app.sandbox`` or
``python -m app.sandbox.cli``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from .docker import SandboxError
from .sandbox import DEFAULT_NAME, Sandbox, SandboxInfo
from .transfer import info_as_dict


def _sandbox(ctx: click.Context) -> Sandbox:
    name = ctx.obj["name"]
    return Sandbox(name=name, state_dir=ctx.obj.get("state_dir"))


def _print_info(info: SandboxInfo) -> None:
    echo = click.echo
    echo(f"Sandbox {info.name} ({'running' if info.running else 'NOT fully running'})")
    echo(f"  state:        {info.state_dir}")
    echo(f"  network:      {info.network} {info.subnet}")
    echo(f"  known_hosts:  {info.known_hosts_path}")
    servers = list(info.servers) + ([info.bare] if info.bare else [])
    for s in servers:
        kind = "server" if s.has_docker else "bare server (no Docker)"
        echo(f"  {kind} {s.name}")
        echo(f"    ssh:        {s.user}@{s.host} port {s.ssh_port}   (ssh -i {s.root_key_path} -p {s.ssh_port} "
             f"-o UserKnownHostsFile={info.known_hosts_path} {s.user}@{s.host})")
        echo(f"    root key:   {s.root_key_path}")
        echo(f"    host key:   {s.host_key_fingerprint or '(not running)'}")
        echo(f"    http/https: {s.host}:{s.http_port} / {s.host}:{s.https_port}")
        echo(f"    private ip: {s.private_ip}")
        if s.root_password:
            echo(f"    root password (until provisioning disables it): {s.root_password}")
    r = info.registry
    echo("  registry")
    echo(f"    url:        {r.url}   (same address from inside every server)")
    echo(f"    username:   {r.username}")
    echo(f"    password:   {r.password}")
    g = info.git
    echo("  git host")
    echo(f"    sample repository: {g.sample_repo_url}")
    echo(f"    sample commit:     {info.sample_commit or '-'}")
    echo(f"    host key:          {g.host_key_fingerprint or '(not running)'}")
    for key, ref in sorted(info.images.items()):
        echo(f"  image {key}: {ref}")


@click.group("sandbox")
@click.option("--name", default=lambda: os.environ.get("KEYSTONE_SANDBOX_NAME", DEFAULT_NAME), show_default=DEFAULT_NAME,
              help="Sandbox name; everything it creates is labelled with it.")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None,
              help="Where keys, ports and passwords are kept (default INSTANCE/sandbox/NAME).")
@click.pass_context
def sandbox(ctx: click.Context, name: str, state_dir: Path | None) -> None:
    """Local servers (sshd + Docker), a registry and a git host in containers."""
    ctx.ensure_object(dict)
    ctx.obj["name"] = name
    ctx.obj["state_dir"] = state_dir


@sandbox.command("up")
@click.option("--servers", "servers", default=2, show_default=True, type=click.IntRange(1, 50))
@click.option("--bare/--no-bare", default=True, show_default=True, help="Also start the bare (no Docker) server.")
@click.option("--stand-ins/--no-stand-ins", default=True, show_default=True,
              help="Build the Caddy/Postgres/Valkey/PHP stand-in images and push them to the registry.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def up_cmd(ctx: click.Context, servers: int, bare: bool, stand_ins: bool, as_json: bool) -> None:
    """Create or repair the sandbox (idempotent)."""
    started = time.monotonic()
    try:
        info = _sandbox(ctx).up(servers=servers, bare=bare, stand_ins=stand_ins)
    except SandboxError as exc:
        raise click.ClickException(str(exc))
    if as_json:
        click.echo(json.dumps(info_as_dict(info), indent=2))
    else:
        _print_info(info)
        click.echo(f"up in {time.monotonic() - started:.1f} s")


@sandbox.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def status_cmd(ctx: click.Context, as_json: bool) -> None:
    """Show addresses, keys and credentials of the sandbox."""
    try:
        info = _sandbox(ctx).status()
    except SandboxError as exc:
        raise click.ClickException(str(exc))
    if as_json:
        click.echo(json.dumps(info_as_dict(info), indent=2))
    else:
        _print_info(info)
    if not info.running:
        sys.exit(1)


@sandbox.command("down")
@click.pass_context
def down_cmd(ctx: click.Context) -> None:
    """Remove every container, network and volume the sandbox made."""
    try:
        removed = _sandbox(ctx).down()
    except SandboxError as exc:
        raise click.ClickException(str(exc))
    for item in removed:
        click.echo(f"removed {item}")
    click.echo(f"sandbox {ctx.obj['name']} is down ({len(removed)} objects removed)")


if __name__ == "__main__":
    sandbox()
