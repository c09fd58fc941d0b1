"""Every status, kind, role, scope and policy value in Keystone.

Stored as strings with a CHECK constraint (see `enum_column`), so the database
refuses a value the code does not know.
"""
from __future__ import annotations

import enum


class StrEnum(str, enum.Enum):
    def __str__(self) -> str:
        return self.value


class MembershipRole(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    DEPLOYER = "deployer"
    VIEWER = "viewer"


class ProviderType(StrEnum):
    HETZNER = "hetzner"
    CUSTOM = "custom"
    SANDBOX = "sandbox"


class ServerStatus(StrEnum):
    NEW = "new"
    CREATING = "creating"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    DELETING = "deleting"
    DELETED = "deleted"


class RepositoryType(StrEnum):
    GITHUB = "github"
    GITEA = "gitea"
    GIT = "git"


class EnvironmentStatus(StrEnum):
    NEW = "new"
    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    FAILED = "failed"
    STOPPED = "stopped"


class SchedulerMode(StrEnum):
    SINGLE = "single"
    EVERY_REPLICA = "every_replica"


class ServiceCategory(StrEnum):
    APPLICATION = "application"
    DATABASE = "database"
    CACHE = "cache"
    GATEWAY = "gateway"
    BUILDER = "builder"
    STORAGE = "storage"
    STANDALONE = "standalone"


class ServiceStatus(StrEnum):
    NEW = "new"
    DEPLOYING = "deploying"
    RUNNING = "running"
    DEGRADED = "degraded"
    STOPPED = "stopped"
    FAILED = "failed"


class DeployPolicy(StrEnum):
    WITH_ENVIRONMENT = "with_environment"
    DEPENDENCY_ONLY = "dependency_only"
    MANUAL_OR_ON_ROUTE_CHANGE = "manual_or_on_route_change"
    MANUAL = "manual"


class UpdateStatus(StrEnum):
    UNKNOWN = "unknown"
    CURRENT = "current"
    AVAILABLE = "available"
    UPDATING = "updating"


class ReplicaStatus(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"
    REMOVED = "removed"


# A replica in one of these has a container on its server (pages list only these; a failed
# replica's container was removed when it failed).
PRESENT_REPLICA_STATUSES = frozenset({ReplicaStatus.PENDING, ReplicaStatus.STARTING,
                                      ReplicaStatus.RUNNING, ReplicaStatus.DRAINING})


class HealthStatus(StrEnum):
    UNKNOWN = "unknown"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class SliceType(StrEnum):
    POSTGRES_DATABASE = "postgres_database"
    VALKEY_NAMESPACE = "valkey_namespace"
    CADDY_ROUTE = "caddy_route"


class SliceStatus(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    READY = "ready"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


class AttachmentRole(StrEnum):
    DATABASE = "database"
    CACHE = "cache"
    QUEUE = "queue"
    STORAGE = "storage"
    GATEWAY = "gateway"
    CUSTOM = "custom"


class VariableSource(StrEnum):
    USER = "user"
    MANAGED_ATTACHMENT = "managed_attachment"
    SYSTEM = "system"


class EndpointScope(StrEnum):
    DOCKER_NETWORK = "docker_network"
    PRIVATE_NETWORK = "private_network"
    PUBLIC = "public"


class OperationKind(StrEnum):
    SERVER_PROVISION = "server_provision"
    SERVICE_DEPLOY = "service_deploy"
    REPLICA_DEPLOY = "replica_deploy"
    SLICE_PROVISION = "slice_provision"
    SLICE_CONFIGURE = "slice_configure"
    ENVIRONMENT_DEPLOY = "environment_deploy"
    GATEWAY_CUTOVER = "gateway_cutover"
    CONFIG_CHANGE = "config_change"
    CREDENTIAL_ROTATION = "credential_rotation"
    # Checks that read the network (never inside a web request: issue 16.3)
    REPOSITORY_VERIFY = "repository_verify"   # git ls-remote with the deploy key
    HOST_KEY_SCAN = "host_key_scan"           # read a custom server's SSH host key
    IMAGE_CHECK = "image_check"               # ask the registry for a newer digest
    SANDBOX_START = "sandbox_start"           # bring the local sandbox up (onboarding)
    PROVIDER_SYNC = "provider_sync"           # check a Hetzner token, list what it offers
    SERVER_DELETE = "server_delete"           # delete a server at Hetzner, then in Keystone
    # Postgres backups (issue 17.3)
    DATABASE_BACKUP = "database_backup"       # pg_dump -Fc of a slice to a backup target
    DATABASE_RESTORE = "database_restore"     # pg_restore of a backup into a slice
    COMMAND_RUN = "command_run"               # argv in a one-off container of the current build
    HOUSEKEEPING = "housekeeping"             # prune old images, containers, dirs of a server
    SERVICE_SCALE = "service_scale"           # replicas per server up or down, no cutover (20.2)


class OperationStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"          # waiting behind a lock held by another operation
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({OperationStatus.SUCCEEDED, OperationStatus.FAILED,
                               OperationStatus.CANCELLED, OperationStatus.INTERRUPTED})


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"        # an explicit no-op: nothing to change
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class RegistryType(StrEnum):
    GENERIC = "generic"
    GITEA = "gitea"
    GHCR = "ghcr"
    DOCKERHUB = "dockerhub"


class BuildStrategy(StrEnum):
    TARGET_SERVER = "target_server"
    DEDICATED_BUILDER = "dedicated_builder"
    EXTERNAL_REGISTRY = "external_registry"


class ArtifactStatus(StrEnum):
    PENDING = "pending"
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"
    PRUNED = "pruned"      # image removed by housekeeping: rollback does not offer it


class MigrationMode(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"
    DISABLED = "disabled"


class MigrationTiming(StrEnum):
    PRE_SWITCH = "pre_switch"
    POST_SWITCH = "post_switch"
