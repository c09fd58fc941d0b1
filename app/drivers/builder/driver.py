"""Builder (SPEC 6, ``dedicated_builder``): a server role that builds images and pushes them.

"Building is a service capability, not a server type": a dedicated builder is a
:class:`~app.models.Service` of category ``builder`` placed on a server. It runs no container
of its own: what builds is the server's Docker engine, driven over SSH by the build step of an
environment deploy (app.builds.artifacts: the source is uploaded to the builder's server,
``docker build`` runs there, the image is pushed to the environment's registry, and every
target server pulls the same digest). So this driver's "deploy" is a readiness check of that
role: the engine answers, ``docker build`` and ``docker push`` exist, and the builder's work
directory is there. Until that check has passed (the service is ``running``), the build plan
refuses the ``dedicated_builder`` strategy with the reason.

Created from **Services -> New service** (type "Image builder"); chosen per environment in
the build settings (strategy "Build on a dedicated builder, then push", and which builder).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.drivers.base import Driver, DriverError, service_dir
from app.drivers.plan import Mkdir, Run, StepPlan
from app.drivers.registry import register
from app.models.enums import DeployPolicy, ServiceCategory
from app.shell import cmd

if TYPE_CHECKING:  # pragma: no cover
    from app.models import Service


def _engine_version(stdout: str) -> str | None:
    version = stdout.strip().splitlines()[-1].strip() if stdout.strip() else ""
    return None if version and version[0].isdigit() else \
        f"the Docker engine did not answer with its version ({version[:80]!r})"


@register
class BuilderDriver(Driver):
    type = "builder"
    category = ServiceCategory.BUILDER
    version_track = "docker"
    default_image = ""            # no container: the server's Docker engine builds
    deploy_policy = DeployPolicy.MANUAL
    label = "Image builder (builds and pushes images for the dedicated_builder strategy)"
    short_label = "Image builder"
    name_base = "builder"
    form_fields = ()
    runs_container = False

    def render_compose(self, service: "Service", ctx: Any):  # pragma: no cover - never called
        raise DriverError("a builder runs no container of its own")

    def image_on_track(self, ref: str) -> str | None:
        return "a builder runs no image of its own: it builds with the server's Docker engine"

    def readiness_steps(self, service: "Service") -> list[StepPlan]:
        """What deploying a builder runs on its server (a check, nothing long-running)."""
        return [
            StepPlan("Check the Docker engine that builds", (
                Run(cmd("docker", "version", "--format", "{{.Server.Version}}"), pty=False,
                    timeout=60, expect=_engine_version),
                Run(cmd("docker", "build", "--help"), pty=False, timeout=60),
                Run(cmd("docker", "push", "--help"), pty=False, timeout=60),
            )),
            StepPlan("Prepare the builder's work directory", (Mkdir(service_dir(service.id)),)),
        ]


__all__ = ["BuilderDriver"]
