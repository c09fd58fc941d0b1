"""The domain model (SPEC sections 2, 3, 6 and 14)."""
from app.models.application import (Application, Environment, EnvironmentAttachment,
                                    EnvironmentRetention, EnvironmentVariable)
from app.models.audit import AuditEvent
from app.models.backup import Backup, BackupPolicy, BackupTarget
from app.models.build import BuildArtifact, Registry
from app.models.certificate import GatewayCertificate
from app.models.enums import *  # noqa: F401,F403
from app.models.hooks import (DeployHook, DeployHookDelivery, NotificationChannel,
                              NotificationDelivery)
from app.models.operation import Operation, OperationLock, OperationLogArchive, OperationStep
from app.models.metrics import ServerMetric
from app.models.organisation import Invitation, Membership, Organisation, User
from app.models.server import Provider, Server
from app.models.service import Endpoint, Service, ServiceReplica, ServiceSlice
from app.models.token import ApiToken
from app.models.two_factor import RecoveryCode

__all__ = [
    "Organisation", "User", "Membership", "Invitation", "Provider", "Server", "Application",
    "Environment", "EnvironmentAttachment", "EnvironmentRetention", "EnvironmentVariable",
    "Service", "ServiceReplica", "ServiceSlice", "Endpoint", "Operation", "OperationStep",
    "OperationLock", "OperationLogArchive", "Registry", "BuildArtifact", "AuditEvent", "ApiToken",
    "ServerMetric", "RecoveryCode", "GatewayCertificate",
    "Backup", "BackupPolicy", "BackupTarget",
    "DeployHook", "DeployHookDelivery", "NotificationChannel", "NotificationDelivery",
]
