"""``keystone login``, ``deploy``, ``rollback``, ``builds``, ``status``, ``env``, ``logs``: the API from a terminal
or a CI job. Exit codes: 0 success; 1 the deploy failed (or was cancelled/interrupted);
2 a usage or API error; 130 interrupted (the deploy goes on on the server)."""
from __future__ import annotations

import json
import sys

import click

from app.client.api import Client, ClientError, normalise_url, save_credentials

FAILED, USAGE, INTERRUPTED = 1, 2, 130


def _fail(exc: ClientError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(USAGE)


@click.command("login")
@click.argument("url")
@click.option("--token-stdin", is_flag=True, help="Read the token from standard input.")
def login_command(url, token_stdin):
    """Store URL and a personal access token (Settings, API tokens) for later commands."""
    try:
        url = normalise_url(url)
        if token_stdin:
            token = sys.stdin.readline().strip()
        else:
            token = click.prompt("Token (kst_..., from Settings, API tokens)", hide_input=True)
        me = Client(url, token.strip()).get("/api/v1/me")
    except ClientError as exc:
        _fail(exc)
    path = save_credentials(url, token.strip())
    click.echo(f"Logged in to {url} as {me['user']['email']} ({me['organisation']['name']}), "
               f"token {me['name']!r} with {', '.join(me['effective_scopes'])}. "
               f"Saved to {path} (mode 0600).")


def follow(client: Client, op: dict, out=click.echo) -> str:
    """Print the operation's steps ("step n of m") and log lines until it ends; its status."""
    op_id = op["id"]
    total = client.get(f"/api/v1/operations/{op_id}").get("step_total")
    numbers: dict[int, int] = {}
    status = None
    for event, data, _id in client.events(op_id):
        try:
            payload = json.loads(data)
        except ValueError:
            payload = {"status": data}
        if event == "line":
            out(payload.get("text", ""), err=bool(payload.get("stderr")))
        elif event == "step" and payload.get("operation_id") == op_id \
                and not payload.get("cleanup"):
            step_id, state = payload.get("step_id"), payload.get("status")
            if state == "running" and step_id not in numbers:
                numbers[step_id] = len(numbers) + 1
                n = numbers[step_id]
                of = f" of {max(total, n)}" if total else ""
                out(f"--- step {n}{of}: {payload.get('name', '')}")
            elif state in ("failed", "cancelled", "interrupted"):
                out(f"--- step {payload.get('name', '')}: {state}", err=True)
        elif event == "end":
            status = payload.get("status")
    if not status:
        status = client.get(f"/api/v1/operations/{op_id}")["status"]
    return status


def _finish(client: Client, op: dict, what: str, wait: bool) -> None:
    """Follow ``op`` when asked and exit with its result."""
    if not wait:
        click.echo(f"Follow it with --wait next time, or {client.url}/operations/{op['id']}")
        return
    try:
        status = follow(client, op)
    except KeyboardInterrupt:
        click.echo(f"\nStopped following: {what} #{op['id']} goes on on the server.", err=True)
        sys.exit(INTERRUPTED)
    except ClientError as exc:
        _fail(exc)
    if status == "succeeded":
        click.echo(f"{what.capitalize()} #{op['id']} succeeded.")
        return
    try:
        error = client.get(f"/api/v1/operations/{op['id']}").get("error")
    except ClientError:
        error = None
    click.echo(f"{what.capitalize()} #{op['id']} {status}{': ' + error if error else ''}.",
               err=True)
    sys.exit(FAILED)


@click.command("deploy")
@click.argument("target", metavar="APP/ENV")
@click.option("--commit", "commit", default=None, help="A full commit sha (default: the "
                                                       "head of the environment's branch).")
@click.option("--wait", is_flag=True, help="Stream the steps and log; exit with the result.")
def deploy_command(target, commit, wait):
    """Deploy an environment, e.g. `keystone deploy shop/production --wait`."""
    try:
        client = Client.from_config()
        env = client.environment(target)
        op = client.post(f"/api/v1/environments/{env['id']}/deploys",
                         {"commit": commit} if commit else {})
    except ClientError as exc:
        _fail(exc)
    click.echo(f"Deploy #{op['id']} of {target} {op['status']}"
               f"{' (commit ' + op['commit'][:12] + ')' if op.get('commit') else ''}.")
    _finish(client, op, "deploy", wait)


@click.command("rollback")
@click.argument("target", metavar="APP/ENV")
@click.option("--to", "build_id", type=click.IntRange(min=1), default=None,
              help="The build to roll back to (see `keystone builds APP/ENV`); default: the "
                   "newest finished build before the live one.")
@click.option("--wait", is_flag=True, help="Stream the steps and log; exit with the result.")
def rollback_command(target, build_id, wait):
    """Redeploy an earlier build through the same cutover (migrations are not reversed)."""
    try:
        client = Client.from_config()
        env = client.environment(target)
        op = client.post(f"/api/v1/environments/{env['id']}/rollback",
                         {"build_id": build_id} if build_id else {})
    except ClientError as exc:
        _fail(exc)
    click.echo(f"Rollback #{op['id']} of {target} to build #{op.get('artifact_id')} "
               f"{op['status']}.")
    _finish(client, op, "rollback", wait)


@click.command("builds")
@click.argument("target", metavar="APP/ENV")
def builds_command(target):
    """The finished builds of an environment, newest first (for rollback --to)."""
    try:
        client = Client.from_config()
        env = client.environment(target)
        builds = client.get(f"/api/v1/environments/{env['id']}/builds", per_page=20)["items"]
    except ClientError as exc:
        _fail(exc)
    if not builds:
        click.echo("No finished build yet.")
    for b in builds:
        click.echo(f"#{b['id']:<6} {b['commit'][:12]}  {b['created_at']}"
                   f"{'  (live)' if b['current'] else ''}")


@click.command("status")
def status_command():
    """Every environment: its status, live commit and last deploy."""
    try:
        client = Client.from_config()
        envs = client.all_pages("/api/v1/environments")
        rows = []
        for env in envs:
            last = client.get(f"/api/v1/environments/{env['id']}/deploys", per_page=1)["items"]
            deploy = f"#{last[0]['id']} {last[0]['status']}" if last else "never deployed"
            rows.append((f"{env['application']}/{env['name']}", env["status"],
                         (env.get("current_commit") or "-")[:12], deploy, env.get("url") or ""))
    except ClientError as exc:
        _fail(exc)
    if not rows:
        click.echo("No environments yet.")
        return
    header = ("ENVIRONMENT", "STATUS", "COMMIT", "LAST DEPLOY", "URL")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


def _effective(variables: list[dict]) -> dict[str, dict]:
    """One row per key: the environment's own variable wins over an attachment's."""
    rows: dict[str, dict] = {}
    for v in variables:
        if v["key"] not in rows or v["source"] == "user":
            rows[v["key"]] = v
    return dict(sorted(rows.items()))


@click.command("env")
@click.argument("target", metavar="APP/ENV")
@click.argument("action", required=False, default="list",
                type=click.Choice(["list", "set", "unset", "pull"]))
@click.argument("args", nargs=-1)
@click.option("--secret", is_flag=True, help="set: mark the values secret.")
@click.option("--reveal", is_flag=True, help="pull: include secret values (admin scope; "
                                              "each reveal is recorded).")
def env_command(target, action, args, secret, reveal):
    """An environment's variables: `list`, `set KEY=VALUE...`, `unset KEY...`,
    `pull > .env` (secrets as *** unless --reveal). Changes take effect at the next deploy."""
    from app.dotenv_bulk import render
    try:
        client = Client.from_config()
        env = client.environment(target)
        base = f"/api/v1/environments/{env['id']}/variables"
        if action == "set":
            pairs = [a.partition("=") for a in args]
            if not pairs or any(not sep or not key for key, sep, _ in pairs):
                raise click.UsageError("set takes KEY=VALUE arguments, e.g. set APP_NAME=Shop")
            for key, _, value in pairs:
                client.post(base, {"key": key, "value": value, "secret": secret})
                click.echo(f"{key} set{' (secret)' if secret else ''}.")
            click.echo("It takes effect at the next deploy.")
        elif action == "unset":
            if not args:
                raise click.UsageError("unset takes variable names, e.g. unset APP_DEBUG")
            for key in args:
                done = client.post(f"{base}/unset", {"key": key})
                click.echo(f"{key} {'removed' if done['deleted'] else 'was not set'}.")
        else:
            rows = _effective(client.get(base)["items"])
            if action == "pull":
                values, secrets = {}, set()
                for key, v in rows.items():
                    if v["secret"]:
                        secrets.add(key)
                        if reveal:
                            v = client.post(f"{base}/{v['id']}/reveal")
                    values[key] = v["value"] if v["value"] is not None else ""
                click.echo(render(values, secrets, reveal=reveal), nl=False)
            else:
                for key, v in rows.items():
                    shown = "***" if v["secret"] else v["value"]
                    click.echo(f"{key}={shown}  ({v['source']})")
    except ClientError as exc:
        _fail(exc)


QUIET_KEEPALIVES = 4
"""Without --follow: how many keepalives in a row with no line yet end the wait (~12 s)."""


@click.command("logs")
@click.argument("target", metavar="APP/ENV")
@click.option("--service", "service_name", default="web", show_default=True,
              help="A service of the environment by name, or its role (web, worker, ...).")
@click.option("--since", type=click.Choice(["5m", "1h", "24h"]), default=None,
              help="Start this far back (default: the last --tail lines).")
@click.option("--tail", type=click.IntRange(0, 1000), default=200, show_default=True,
              help="Lines per replica to start with.")
@click.option("-f", "--follow", is_flag=True, help="Keep following until Ctrl-C.")
def logs_command(target, service_name, since, tail, follow):
    """The live log of a service's running replicas, each line tagged with its replica."""
    try:
        client = Client.from_config()
        env = client.environment(target)
        services = client.all_pages("/api/v1/services", environment_id=env["id"])
        chosen = [s for s in services if s["name"] == service_name] or \
            [s for s in services if service_name in s.get("process_roles", [])]
        if not chosen:
            names = ", ".join(s["name"] for s in services) or "none"
            raise ClientError(f"No service {service_name!r} in {target} (services: {names}).")
        while True:
            seen, quiet = 0, 0
            for event, data, _id in client.stream(f"/api/v1/services/{chosen[0]['id']}/logs",
                                                   since=since, tail=tail):
                if event == "line":
                    line = json.loads(data)
                    tag = f"[{line['replica']}] " if line.get("replica") else ""
                    click.echo(f"{tag}{line.get('text', '')}", err=bool(line.get("stderr")))
                    seen, quiet = seen + 1, 0
                elif event == ":" and data == "keepalive" and not follow:
                    quiet += 1
                    if seen or quiet >= QUIET_KEEPALIVES:
                        return  # the backlog is out and nothing new came
            if not follow:
                return
            since, tail = None, 0  # the response ended (a time limit): go on from now
    except KeyboardInterrupt:
        return
    except ClientError as exc:
        _fail(exc)


COMMANDS = (login_command, deploy_command, rollback_command, builds_command, status_command,
            env_command, logs_command)
