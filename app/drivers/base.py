"""The service driver contract (SPEC section 9).

One class, :class:`Driver`, that every v1 driver subclasses. A driver is a
*description plus pure builders*: it declares what the service is (type,
version track, default image, ports, volumes, env schema with secret keys,
health check, resource defaults, slice types, firewall needs, update
behaviour) and turns database rows into artifacts (a Compose document as
Python data, env exports, shell command values for its slice actions).

It never opens a connection: the operation handlers in :mod:`app.services_ops`
run what drivers build (Kamal's "builders return commands; one layer runs
them"). The steps of a deploy, an update and a slice action are planned by
the driver's hooks below as :class:`app.drivers.plan.StepPlan` data; the
generic handlers call the hooks and know no driver by name.

Registration is by type (Redash's query-runner registry): a driver package
calls :func:`app.drivers.registry.register` on import, so adding a driver
touches only its own package plus one import line in ``app/drivers/__init__``
(docs/architecture.md, "Adding a driver").
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from app.drivers.plan import StepPlan
from app.drivers.secrets import generate_password
from app.models.enums import AttachmentRole, DeployPolicy, ServiceCategory, SliceType

if TYPE_CHECKING:  # pragma: no cover
    from app.models import Service, ServiceReplica, ServiceSlice
    from app.shell import Command

KEYSTONE_HOME = "/home/keystone"
SERVICES_ROOT = f"{KEYSTONE_HOME}/services"
GATEWAY_DIR = f"{KEYSTONE_HOME}/gateway"
DOCKER_NETWORK = "keystone"
"""The one shared Docker network per server (SPEC 14); created idempotently."""

LABEL_PREFIX = "dev.keystone"


class DriverError(ValueError):
    """A configuration or input error a user can fix; the message names the path."""


# --------------------------------------------------------------------------- declarations

@dataclass(frozen=True)
class PortSpec:
    name: str
    container_port: int
    protocol: str = "tcp"
    # Published on the host by default (only the gateway's 80/443 are).
    public: bool = False
    # Reachable from other servers of the private network when asked for.
    cross_server: bool = False


@dataclass(frozen=True)
class VolumeSpec:
    """A named Docker volume; the full name is ``keystone_service_<id>_<suffix>`` (SPEC 10)."""

    suffix: str
    mount_path: str
    persistent: bool = True

    def volume_name(self, service_id: int) -> str:
        return f"keystone_service_{service_id}_{self.suffix}"


@dataclass(frozen=True)
class EnvField:
    """One entry of a driver's environment schema (Redash-style: secrets drive masking)."""

    key: str
    description: str = ""
    secret: bool = False
    required: bool = False
    default: str | None = None


@dataclass(frozen=True)
class HealthCheck:
    """Rendered as a Compose ``healthcheck``; ``test`` is exec-form unless ``shell_form``."""

    test: tuple[str, ...]
    shell_form: bool = False  # Compose CMD-SHELL (a fixed Keystone string, never user input)
    interval: str = "5s"
    timeout: str = "3s"
    retries: int = 10
    start_period: str = "10s"

    def exec_argv(self) -> list[str]:
        """The same test as a command to run in the container (``docker exec``), so a
        deploy can run it itself instead of waiting for Docker's first check, which
        Docker runs one ``interval`` after the start, not sooner."""
        return ["sh", "-c", " ".join(self.test)] if self.shell_form else list(self.test)

    def compose(self) -> dict[str, Any]:
        from app.drivers.compose import escape_dollars
        if self.shell_form:
            test: list[str] = ["CMD-SHELL", escape_dollars(" ".join(self.test))]
        else:
            test = ["CMD", *(escape_dollars(t) for t in self.test)]
        return {"test": test, "interval": self.interval, "timeout": self.timeout,
                "retries": self.retries, "start_period": self.start_period}


@dataclass(frozen=True)
class Resources:
    """Effective limits. ``None`` means unrestricted except by host capacity."""

    cpus: float | None = None
    memory_mb: int | None = None

    def compose(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cpus is not None:
            if self.cpus <= 0:
                raise DriverError("cpu limit: must be a positive number of CPUs")
            out["cpus"] = str(float(self.cpus))  # "1.0", "0.5": a string, as in SPEC 16
        if self.memory_mb is not None:
            if int(self.memory_mb) < 6:
                raise DriverError("memory limit: must be at least 6 MB (Docker's minimum)")
            out["mem_limit"] = f"{int(self.memory_mb)}m"
            # Same as mem_limit: no swap on top of the limit (predictable OOM).
            out["memswap_limit"] = f"{int(self.memory_mb)}m"
        return out


@dataclass(frozen=True)
class FirewallRule:
    """A port other servers need; opened with UFW to the private network only."""

    port: int
    protocol: str = "tcp"
    comment: str = ""


@dataclass(frozen=True)
class ExportField:
    """A variable an attached environment receives from a slice (SPEC 13).

    ``overridable=False``: a user variable of the same name is refused (the
    attachment owns it); ``secret``: masked on pages and in logs.
    """

    key: str
    secret: bool = False
    overridable: bool = True


@dataclass(frozen=True)
class FormField:
    """A setting the "New service" form offers for this driver (stored in ``Service.config``)."""

    name: str
    label: str
    kind: str = "text"  # "text" or "checkbox"
    hint: str = ""


@dataclass(frozen=True)
class UpdateBehaviour:
    """How a new image digest is rolled out (SPEC 11 for stateful services)."""

    stateful: bool
    downtime: bool
    warning: str = ""


# --------------------------------------------------------------------------- naming

_SLUG_RE = re.compile(r"[^a-z0-9]+")


def slug(name: str, max_len: int = 40) -> str:
    """A DNS-label-safe form of a service name ("My DB" -> "my-db")."""
    s = _SLUG_RE.sub("-", (name or "").lower()).strip("-")[:max_len].strip("-")
    return s or "service"


def service_alias(service: "Service") -> str:
    """The deterministic internal hostname of a service on the server's network (SPEC 14)."""
    return f"{slug(service.name)}-{service.id}.internal"


def replica_alias(service: "Service", replica_id: int | str) -> str:
    return f"{slug(service.name)}-{service.id}-r{replica_id}.internal"


def service_dir(service_id: int) -> str:
    return f"{SERVICES_ROOT}/{int(service_id)}"


def default_container_name(service: "Service") -> str:
    return f"ks-{slug(service.name, 30)}-{service.id}"


def default_project_name(service: "Service") -> str:
    # Compose project names: lowercase letters, digits, dashes, underscores.
    return f"ks-svc-{service.id}"


# --------------------------------------------------------------------------- contract

@dataclass
class RenderContext:
    """What a compose rendering needs besides the service row.

    ``image`` is the full reference to run (``name@sha256:...`` after
    resolution). ``env_file`` entries go to the ``.env`` file; the compose
    renderer moves values that no env-file quoting carries byte for byte in
    both Compose v1 and v2 into ``environment:`` (see app.drivers.envfile).
    """

    image: str
    project_name: str
    container_name: str
    operation_id: int | None = None
    replica_id: int | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    private_ip: str | None = None
    published_port: int | None = None
    extra_labels: Mapping[str, str] = field(default_factory=dict)


class Driver:
    """Base class of every service driver. Subclasses set the ClassVars and override builders."""

    type: ClassVar[str]
    category: ClassVar[ServiceCategory]
    version_track: ClassVar[str]
    default_image: ClassVar[str]  # tag on the version track, e.g. "postgres:18"
    deploy_policy: ClassVar[DeployPolicy] = DeployPolicy.MANUAL
    ports: ClassVar[tuple[PortSpec, ...]] = ()
    volumes: ClassVar[tuple[VolumeSpec, ...]] = ()
    env_schema: ClassVar[tuple[EnvField, ...]] = ()
    slice_types: ClassVar[tuple[SliceType, ...]] = ()
    default_resources: ClassVar[Resources] = Resources()
    update_behaviour: ClassVar[UpdateBehaviour] = UpdateBehaviour(stateful=False, downtime=False)
    health_check: ClassVar[HealthCheck | None] = None
    restart_policy: ClassVar[str] = "unless-stopped"
    stop_grace_period: ClassVar[str | None] = None
    stop_signal: ClassVar[str | None] = None

    # -- what the UI offers ------------------------------------------------
    label: ClassVar[str] = ""            # "Postgres 18 (database)": the New service choice
    short_label: ClassVar[str] = ""      # "Postgres 18": "New Postgres 18 on <server>"
    name_base: ClassVar[str] = ""        # base of generated service names (default: type)
    offered: ClassVar[bool] = True       # created under /services/new and on attach
    form_fields: ClassVar[tuple[FormField, ...]] = (
        FormField("image", "Image override"),
        FormField("expose_private", "Reachable from the private network", kind="checkbox"),
    )
    user_slice_type: ClassVar[SliceType | None] = None  # slices a user creates by name
    attach_roles: ClassVar[tuple[AttachmentRole, ...]] = ()  # the first is the default
    exports: ClassVar[tuple[ExportField, ...]] = ()
    recommended: ClassVar[Mapping[AttachmentRole, tuple[tuple[str, str], ...]]] = {}

    # -- what the generic handlers ask ---------------------------------------
    deploy_refusal: ClassVar[str | None] = None  # set: never deployed on its own (why)
    routes_environment: ClassVar[bool] = False   # slices list an environment's slots
    # False: a role of the server with no container of its own (the builder): its deploy
    # runs ``readiness_steps`` and records the service running, no replica, no image.
    runs_container: ClassVar[bool] = True

    # -- declarations derived from the row ------------------------------

    def image(self, service: "Service") -> str:
        """The tag to resolve: ``service.config["image"]`` overrides the driver default.

        The override is how tests (sandbox stand-ins) and private mirrors
        point a driver elsewhere; it must stay on the same version track.
        """
        override = (service.config or {}).get("image")
        return override or self.default_image

    def image_on_track(self, ref: str) -> str | None:
        """Why ``ref`` cannot be this driver's image override, or None when it can.

        An override must be the same image family (the repository's last path part,
        ``postgres`` in ``mirror.example/library/postgres:18.1``) with a tag on the
        driver's version track (``18``, ``18.1``, ``18-bookworm``; optionally pinned
        ``@sha256:...``): a new major needs its own migration path (SPEC 21), and a
        Postgres 17 image, say, cannot start on an 18 data directory.
        """
        from app.registries.references import ImageReferenceError, split_reference
        family = split_reference(self.default_image).path.rsplit("/", 1)[-1]
        example = f"{family}:{self.version_track}"
        try:
            parsed = split_reference(ref)
        except ImageReferenceError as exc:
            return str(exc)
        if parsed.path.rsplit("/", 1)[-1] != family:
            return (f"{ref} is not a {family} image: an override must be the same image "
                    f"(from a mirror, say), such as {example}")
        if not parsed.tag:
            return f"{ref} names no tag: give one on version track {self.version_track}, such as {example}"
        if not re.fullmatch(re.escape(self.version_track) + r"(?:[.\-_][A-Za-z0-9._-]*)?",
                            parsed.tag):
            return (f"{ref} is not on version track {self.version_track}: Keystone keeps "
                    f"{family} on {self.version_track} (tags like {self.version_track}, "
                    f"{self.version_track}.1 or {self.version_track}-alpine)")
        return None

    @property
    def secret_keys(self) -> frozenset[str]:
        return frozenset(f.key for f in self.env_schema if f.secret)

    def resources_for(self, service: "Service", replica: "ServiceReplica | None" = None) -> Resources:
        """Replica overrides service overrides driver default; None = unrestricted."""
        cpus = self.default_resources.cpus
        mem = self.default_resources.memory_mb
        if service.default_cpu_limit is not None:
            cpus = service.default_cpu_limit
        if service.default_memory_limit_mb is not None:
            mem = service.default_memory_limit_mb
        if replica is not None:
            if replica.cpu_limit is not None:
                cpus = replica.cpu_limit
            if replica.memory_limit_mb is not None:
                mem = replica.memory_limit_mb
        return Resources(cpus=cpus, memory_mb=mem)

    def volumes_for(self, service: "Service") -> tuple[VolumeSpec, ...]:
        """The named volumes this service uses (a driver may drop some by config)."""
        return self.volumes

    def volume_names(self, service: "Service") -> list[str]:
        return [v.volume_name(service.id) for v in self.volumes_for(service)]

    def internal_port(self) -> int | None:
        return self.ports[0].container_port if self.ports else None

    def firewall_rules(self, service: "Service") -> list[FirewallRule]:
        """Ports other servers need (only when the service is exposed on the private network)."""
        if not (service.config or {}).get("expose_private"):
            return []
        return [FirewallRule(p.container_port, p.protocol, f"{self.type} {service.id}")
                for p in self.ports if p.cross_server]

    # The key in ``Service.secrets`` of the service's own generated password, if it has one
    # (Postgres' superuser, Valkey's default user).
    password_secret: ClassVar[str | None] = None

    def ensure_secrets(self, service: "Service") -> bool:
        """Generate the service's own secrets once; True when the row changed."""
        key = self.password_secret
        current = dict(service.secrets or {})
        if key is None or current.get(key):
            return False
        current[key] = generate_password()
        service.secrets = current
        return True

    def service_password(self, service: "Service") -> str:
        """The generated password (``password_secret``); DriverError before ensure_secrets."""
        password = (service.secrets or {}).get(self.password_secret or "")
        if not password:
            raise DriverError(f"service {service.id}: no {self.password_secret} "
                              "(ensure_secrets)")
        return password

    def service_environment(self, service: "Service") -> dict[str, str]:
        """The container environment of the service itself (from its secrets and config)."""
        return {}

    def env_exports(self, service: "Service", slice_: "ServiceSlice", host: str,
                    port: int | None = None) -> dict[str, str]:
        """Managed variables an attached environment receives from a slice; ``host`` and
        ``port`` come from the service's endpoint as seen by the environment (app.endpoints;
        ``port`` None: the driver's own)."""
        return {}

    def slice_commands(self, service: "Service", slice_: "ServiceSlice", action: str,
                       container: str, **params: Any) -> list["Command"]:
        """Shell command values that perform a slice action against a running replica."""
        raise DriverError(f"{self.type}: slices of type {slice_.type} are not supported")

    # -- create, deploy and update (plans; app.services_ops runs them) --------

    def settings_from_form(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """``Service.config`` from the New service form's declared fields (empty ones left out)."""
        out: dict[str, Any] = {}
        for f in self.form_fields:
            value = data.get(f.name)
            if f.kind == "checkbox":
                if value:
                    out[f.name] = True
            elif isinstance(value, str) and value.strip():
                out[f.name] = value.strip()
        return out

    def check_placement(self, service: "Service") -> None:
        """Refuse a placement the driver cannot live with (DriverError names why)."""

    def deploy_lock_keys(self, service: "Service") -> list[str]:
        """Locks a deploy takes besides ``service:<id>``."""
        return []

    def deploy_steps(self, service: "Service", *, running: bool) -> list[StepPlan]:
        """Files the service needs before its compose project starts (a deploy or an update)."""
        return []

    def readiness_steps(self, service: "Service") -> list[StepPlan]:
        """A container-less driver's deploy (``runs_container`` False): checks on its server."""
        return []

    def after_deploy_steps(self, service: "Service", container: str, *,
                           is_update: bool) -> list[StepPlan]:
        """Steps once the new container is healthy and recorded."""
        return []

    def reconfigure_steps(self, service: "Service", container: str) -> list[StepPlan]:
        """Apply the service's rendered configuration to the running container, no restart."""
        return []

    # -- slices (plans) ------------------------------------------------------

    def new_slice_credentials(self, slice_: "ServiceSlice") -> dict[str, str]:
        """Fresh credentials for a rotation; DriverError when the slice has none."""
        return {**(slice_.credentials or {}), "password": generate_password()}

    def slice_provision_steps(self, service: "Service", slice_: "ServiceSlice", container: str,
                              action: str = "provision") -> list[StepPlan]:
        """Create (``provision``) or re-key (``rotate``) a slice on the running replica."""
        raise DriverError(f"{self.type}: slices of type {slice_.type} are not supported")

    def slice_delete_steps(self, service: "Service", slice_: "ServiceSlice", container: str,
                           *, drop: bool) -> list[StepPlan]:
        """While the slice is ``deleting``: drop its data (``drop``) or disable it."""
        return []

    def slice_deleted_steps(self, service: "Service", slice_: "ServiceSlice",
                            container: str) -> list[StepPlan]:
        """Once the slice is marked deleted, before its attachments are removed."""
        return []

    def slice_released_steps(self, service: "Service", container: str) -> list[StepPlan]:
        """After the deleted slice's attachments are removed and committed."""
        return []

    def slice_peers(self, service: "Service", slice_: "ServiceSlice") -> list["Service"]:
        """Other services whose configuration depends on ``slice_`` (reconfigured, where
        changed, after it is provisioned): the other gateways serving a route's names."""
        return []

    def attach_recommendations(self, role: AttachmentRole) -> tuple[tuple[str, str], ...]:
        """Settings an attachment in ``role`` suggests (applied only when the user confirms)."""
        return tuple(self.recommended.get(role, ()))

    # -- compose ----------------------------------------------------------

    def compose_service(self, service: "Service", ctx: RenderContext) -> dict[str, Any]:
        """The Compose ``services.<name>`` entry (data, not text)."""
        raise NotImplementedError

    def render_compose(self, service: "Service", ctx: RenderContext) -> "RenderedCompose":
        from app.drivers.compose import render_service_compose
        return render_service_compose(self, service, ctx)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} type={self.type}>"


@dataclass
class RenderedCompose:
    """The files of one compose project: write both with mode 0600."""

    project_name: str
    compose: dict[str, Any]
    compose_yaml: str
    env_file: str
    directory: str

    @property
    def compose_path(self) -> str:
        return f"{self.directory}/compose.yml"

    @property
    def env_path(self) -> str:
        return f"{self.directory}/.env"

    @property
    def interpolation_env_path(self) -> str:
        return f"{self.directory}/compose.env"
