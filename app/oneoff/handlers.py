"""The ``command_run`` operation: argv in a one-off container of the current build.

    Pull image on <server>        the artifact's image is there (a no-op when it is)
    Run <argv>                    docker compose run --rm ... worker ARGV... (live log)
    Remove the one-off container  clean-up: on success, failure, timeout and cancel

The project is rendered by the service's driver exactly like a replica's (same
variables through the same env-file/compose rules, same network, same aliases), with
the ``worker`` role so no web server starts. The exit code is the operation's result
(``result.exit_code``); non-zero fails the operation.
"""
from __future__ import annotations

from app.builds.artifacts import artifact_registry, image_ref, make_present
from app.deploys import commands as dc
from app.deploys.values import environment_secrets, environment_values, replica_environment
from app.deploys.service import primary_web, service_server_ids
from app.drivers import get_driver
from app.drivers.compose import compose_cmd, write_project
from app.extensions import db
from app.models import BuildArtifact, Server
from app.models.enums import OperationKind, ReplicaStatus
from app.oneoff.argv import (CommandError, display, is_migrate_status, pending_migrations,
                             validate_argv)
from app.operations import OperationContext, StepFailed, operation_handler
from app.shell import cmd


def _server_for(service) -> Server:
    """A server where the service has a running replica (its image is there), else its
    first placement."""
    running = [r.server_id for r in service.replicas if r.status == ReplicaStatus.RUNNING]
    ids = running or service_server_ids(service)
    if not ids:
        raise StepFailed(f"{service.name} is placed on no server.")
    return db.session.get(Server, ids[0])


@operation_handler(OperationKind.COMMAND_RUN)
def command_run(ctx: OperationContext) -> None:
    env = ctx.target
    if env is None:
        raise StepFailed("The environment no longer exists.")
    try:
        argv = validate_argv((ctx.params or {}).get("argv"))
    except CommandError as exc:
        raise StepFailed(str(exc)) from None
    artifact = db.session.get(BuildArtifact, int((ctx.params or {}).get("artifact_id") or 0))
    if artifact is None or artifact.environment_id != env.id or not artifact.image_digest:
        raise StepFailed("The build this command was started for is gone: start it again.")
    service = primary_web(env)
    if service is None:
        raise StepFailed("The environment has no web service.")
    server = _server_for(service)
    values = environment_values(env)
    for value in environment_secrets(env):
        ctx.runtime.add_secret(value)
    image = image_ref(artifact)
    make_present(ctx, artifact, [server], env.container_registry or artifact_registry(artifact))

    name = f"ks-cmd-{service.id}-op{ctx.id}"
    directory = f"{ctx.workdir()}/cmd-{service.id}"
    rendered = get_driver(service).render_replica(
        service, image=image, project_name=name, container_name=name,
        environment=replica_environment(service, values, server.id), operation_id=ctx.id,
        role="worker", directory=directory)

    def remove(cctx) -> None:
        with cctx.step("Remove the one-off container", server=server) as step:
            step.run(dc.remove(name), check=False, timeout=60)
            step.run(compose_cmd(directory, name, "down", "--remove-orphans"), check=False,
                     timeout=120)
            step.run(cmd("rm", "-rf", "--", directory), check=False, timeout=60)

    line = display(argv)
    ctx.result.update({"argv": argv, "artifact_id": artifact.id, "commit": artifact.commit_sha,
                       "server": server.name})
    with ctx.step(f"Run {line}"[:255], server=server) as step:
        step.log(f"build #{artifact.id} (commit {artifact.commit_sha[:12]}) on {server.name}, "
                 f"with {env.name}'s variables and network")
        ctx.on_cleanup(remove)   # registered before anything can start the container
        write_project(step, rendered)
        try:
            result = step.run(dc.one_off_run(directory, name, "worker", name, argv))
        except StepFailed as exc:
            ctx.result["exit_code"] = exc.exit_code
            raise
        ctx.result["exit_code"] = result.exit_code
        if is_migrate_status(argv):
            pending = pending_migrations(result.stdout or "")
            ctx.result["pending_migrations"] = pending
            if pending is None:
                step.log("could not read the migration list from this output")
            elif pending:
                step.log(f"{len(pending)} migration(s) not run: {', '.join(pending)}")
            else:
                step.log("every migration has run")
