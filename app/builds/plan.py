"""Is an environment buildable on these servers? Checked BEFORE anything runs.

``check_build_plan(environment, servers)`` returns a list of
:class:`BuildProblem` (empty = fine). The deploy flow refuses to start an
operation while it is not empty, and the UI shows each problem with the
action that fixes it (e.g. "Set up a registry" for an environment on more
than one server: build once, push, every server pulls the same digest;
never a rebuild per server).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from app.builds.config import BuildConfig, BuildConfigError, parse_build_config
from app.extensions import db
from app.models import Service
from app.models.enums import BuildStrategy, ServiceCategory, ServiceStatus
from app.repositories.validation import ValidationError, parse_repository_url, validate_branch


@dataclass(frozen=True)
class BuildProblem:
    code: str
    message: str
    action_label: str | None = None
    action_endpoint: str | None = None
    action_args: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


class BuildPlanError(RuntimeError):
    """Raised by ensure_artifact when check_build_plan found problems (nothing ran)."""

    def __init__(self, problems: list[BuildProblem]):
        self.problems = problems
        super().__init__(" ".join(p.message for p in problems))


@dataclass(frozen=True)
class BuildPlan:
    """Where the image is built and whether it is pushed."""

    config: BuildConfig
    strategy: BuildStrategy
    build_server: object | None        # Server the image is built on (None: external image)
    builder_service: object | None     # Service of category builder, when one builds
    push: bool                         # push to the environment's registry after the build


def find_builder(environment, config: BuildConfig):
    """The builder Service of the environment's organisation (the configured one, or the only one)."""
    org_id = environment.application.organisation_id
    stmt = sa.select(Service).where(Service.organisation_id == org_id,
                                    Service.category == ServiceCategory.BUILDER)
    if config.builder_service_id is not None:
        stmt = stmt.where(Service.id == config.builder_service_id)
    builders = db.session.execute(stmt.order_by(Service.id)).scalars().all()
    return builders[0] if builders else None


def _registry_problem(environment, why: str) -> BuildProblem:
    return BuildProblem(
        "registry_required",
        f"{why} Keystone builds the image once, pushes it, and every server pulls the same "
        "digest, so this environment needs a container registry: set one up, then choose it "
        "in the environment's build settings.",
        "Set up a registry", "registries.new", {"environment_id": environment.id})


def check_build_plan(environment, servers) -> list[BuildProblem]:
    """Everything that would make a build or a deploy of ``environment`` on ``servers`` fail early."""
    servers = list(servers or [])
    problems: list[BuildProblem] = []
    try:
        config = parse_build_config(environment.build_config)
    except BuildConfigError as exc:
        return [BuildProblem("build_config", str(exc), "Fix build settings",
                             "applications.build_settings",
                             {"application_id": environment.application_id,
                              "environment_id": environment.id})]
    application = environment.application
    registry = environment.container_registry
    if config.strategy != BuildStrategy.EXTERNAL_REGISTRY:
        try:
            parse_repository_url(application.repository_url)
            validate_branch(environment.branch)
        except ValidationError as exc:
            problems.append(BuildProblem("repository", str(exc)))
        if not application.deploy_key_private:
            problems.append(BuildProblem("deploy_key", "The application has no deploy key."))
        elif not application.repository_known_hosts or not application.deploy_key_installed_at:
            problems.append(BuildProblem(
                "repository_unverified",
                "Repository access was never verified: add the deploy key to the repository and "
                "press \"Verify access\".", "Verify access", "applications.show",
                {"application_id": application.id}))
    if not servers:
        problems.append(BuildProblem("no_servers", "The environment has no server to run on."))
    if registry is not None and registry.organisation_id != application.organisation_id:
        problems.append(BuildProblem("registry", "The chosen registry belongs to another organisation."))
        registry = None
    if len(servers) > 1 and registry is None:
        problems.append(_registry_problem(
            environment, f"This environment runs on {len(servers)} servers and has no registry."))
    if config.strategy == BuildStrategy.DEDICATED_BUILDER:
        builder = find_builder(environment, config)
        if builder is None:
            problems.append(BuildProblem(
                "no_builder", "The dedicated_builder strategy needs a builder service (a service "
                "of category builder on a server): create one under Services, New service, "
                "type Image builder.", "New builder", "services.new", {"type": "builder"}))
        elif builder.server is None:
            problems.append(BuildProblem("no_builder", f"The builder service {builder.name!r} "
                                                        "is not placed on a server."))
        elif builder.status != ServiceStatus.RUNNING:
            problems.append(BuildProblem(
                "builder_not_ready", f"The builder service {builder.name!r} is not ready "
                f"({builder.status.value if builder.status else 'new'}): deploy it from its "
                "page; its readiness check must pass.", "Open the builder", "services.show",
                {"service_id": builder.id}))
        if registry is None and not any(p.code == "registry_required" for p in problems):
            problems.append(_registry_problem(
                environment, "Images built on a dedicated builder reach servers through a registry."))
    return problems


def plan_build(environment, servers) -> BuildPlan:
    """The build plan, or :class:`BuildPlanError` before anything runs."""
    servers = list(servers)
    problems = check_build_plan(environment, servers)
    if problems:
        raise BuildPlanError(problems)
    config = parse_build_config(environment.build_config)
    registry = environment.container_registry
    if config.strategy == BuildStrategy.EXTERNAL_REGISTRY:
        return BuildPlan(config, config.strategy, None, None, False)
    if config.strategy == BuildStrategy.DEDICATED_BUILDER:
        builder = find_builder(environment, config)
        return BuildPlan(config, config.strategy, builder.server, builder, True)
    # target_server: build on the (first) target; push whenever a registry is set, so the
    # artifact can run on any server later (and must, with more than one server).
    return BuildPlan(config, config.strategy, servers[0], None, registry is not None)
