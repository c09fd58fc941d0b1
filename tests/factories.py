"""Builders of a whole organisation's object graph, for web and unit tests."""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from app.accounts import create_account
from app.api.tokens import create_token
from app.extensions import db
from app.models import (ApiToken, Application, BuildArtifact, Endpoint, Environment,
                        EnvironmentAttachment, EnvironmentVariable, NotificationChannel,
                        Operation, OperationStep,
                        Provider, Registry, Server, Service, ServiceReplica, ServiceSlice)
from app.models.enums import (AttachmentRole, DeployPolicy, EndpointScope, OperationKind,
                              ProviderType, ServiceCategory, SliceType, VariableSource)

SECRET_SENTINELS = {
    "provider_token": "SENTINEL-provider-token-7f3a",
    "deploy_key": "SENTINEL-deploy-key-private-91bc",
    "slice_password": "SENTINEL-slice-password-22de",
    "env_value": "SENTINEL-env-value-5a5a",
    "step_secret": "SENTINEL-step-secret-0c0c",
    "registry_password": "SENTINEL-registry-password-e1e1",
    "management_key": "SENTINEL-management-key-private-4d4d",
    "service_secret": "SENTINEL-service-secret-9e9e",
    "bootstrap_password": "SENTINEL-bootstrap-password-3b3b",
    "backup_secret": "SENTINEL-backup-s3-secret-6f6f",
    "channel_url": "SENTINEL-channel-url-6c6c",
}


@dataclass
class OrgGraph:
    user: object
    org: object
    provider: Provider
    server: Server
    application: Application
    environment: Environment
    web: Service
    postgres: Service
    replica: ServiceReplica
    slice: ServiceSlice
    attachment: EnvironmentAttachment
    variable: EnvironmentVariable
    endpoint: Endpoint
    operation: Operation
    step: OperationStep
    registry: Registry
    artifact: BuildArtifact
    api_token: ApiToken
    token: str  # the API token itself (admin scope), for Authorization: Bearer
    backup_target: object = None   # an S3 backup target (its secret key is a sentinel)
    backup: object = None          # a finished backup of ``slice`` on it
    channel: object = None  # a notification channel (no events: it never receives one)
    membership: object = None   # the owner's membership
    invitation: object = None   # an open invitation (viewer) to invitee@example.com

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def ids(self) -> dict[str, int]:
        return {
            "organisation_id": self.org.id, "provider_id": self.provider.id,
            "server_id": self.server.id, "application_id": self.application.id,
            "environment_id": self.environment.id, "service_id": self.web.id,
            "replica_id": self.replica.id, "slice_id": self.slice.id,
            "attachment_id": self.attachment.id, "variable_id": self.variable.id,
            "endpoint_id": self.endpoint.id, "operation_id": self.operation.id,
            "step_id": self.step.id, "registry_id": self.registry.id,
            "artifact_id": self.artifact.id, "token_id": self.api_token.id,
            **({"backup_id": self.backup.id} if self.backup is not None else {}),
            **({"channel_id": self.channel.id} if self.channel is not None else {}),
            **({"membership_id": self.membership.id} if self.membership is not None else {}),
            **({"invitation_id": self.invitation.id} if self.invitation is not None else {}),
        }


def build_org(email: str = "b@example.com", organisation: str = "Org B",
              password: str = "correct horse battery", with_backup: bool = True) -> OrgGraph:
    """``with_backup=False`` for schemas older than the backups tables (migration tests)."""
    s = SECRET_SENTINELS
    user = create_account(organisation=organisation, email=email, password=password)
    org = user.organisation
    org.management_key_public = "ssh-ed25519 AAAA test"
    org.management_key_private = s["management_key"]
    provider = Provider(organisation=org, name="hetzner", type=ProviderType.HETZNER,
                        api_token=s["provider_token"])
    server = Server(organisation=org, provider=provider, name="web-1", public_ip="203.0.113.10",
                    private_ip="10.0.0.2", bootstrap_password=s["bootstrap_password"])
    application = Application(organisation=org, name="shop",
                              repository_url="git@github.com:acme/shop.git",
                              deploy_key_private=s["deploy_key"])
    environment = Environment(application=application, name="production", branch="main")
    web = Service(organisation=org, environment=environment, name="web",
                  category=ServiceCategory.APPLICATION, type="laravel", driver_name="laravel",
                  deploy_policy=DeployPolicy.WITH_ENVIRONMENT, process_roles=["web"])
    postgres = Service(organisation=org, name="postgres", category=ServiceCategory.DATABASE,
                       type="postgres", version_track="18", driver_name="postgres",
                       server=server, deploy_policy=DeployPolicy.DEPENDENCY_ONLY,
                       secrets={"superuser_password": s["service_secret"]})
    replica = ServiceReplica(service=web, server=server, container_name="ks-web-1")
    slice_ = ServiceSlice(service=postgres, environment=environment, name="shop_production",
                          type=SliceType.POSTGRES_DATABASE,
                          credentials={"password": s["slice_password"]})
    attachment = EnvironmentAttachment(environment=environment, service=postgres,
                                       service_slice=slice_, role=AttachmentRole.DATABASE)
    variable = EnvironmentVariable(environment=environment, key="APP_KEY", value=s["env_value"],
                                   source=VariableSource.USER, is_secret=True)
    endpoint = Endpoint(service=postgres, scope=EndpointScope.DOCKER_NETWORK,
                        hostname="postgres.internal", port=5432)
    registry = Registry(organisation=org, name="ghcr", url="ghcr.io", username="acme",
                        password=s["registry_password"])
    db.session.add_all([provider, server, application, environment, web, postgres, replica,
                        slice_, attachment, variable, endpoint, registry])
    db.session.flush()
    # What a deploy records (app.endpoints): attachments read their host and port from it.
    from app.drivers.base import service_alias
    endpoint.hostname = service_alias(postgres)
    operation = Operation(organisation_id=org.id, kind=OperationKind.ENVIRONMENT_DEPLOY,
                          target_type="environment", target_id=environment.id)
    step = OperationStep(operation=operation, name="build", order=1, script="docker build ***",
                         secrets={"token": s["step_secret"]})
    artifact = BuildArtifact(environment=environment, commit_sha="a" * 40, image_tag="shop:aaaa",
                             built_by_operation=operation)
    db.session.add_all([operation, step, artifact])
    db.session.commit()
    api_token, token = create_token(user, "ci", ["admin"], None)
    backup_target = backup = None
    if with_backup:
        from app.models.backup import Backup, BackupStatus, BackupTarget, BackupTargetKind
        backup_target = BackupTarget(organisation_id=org.id, name="offsite",
                                     kind=BackupTargetKind.S3,
                                     config={"endpoint_url": "http://127.0.0.1:9", "bucket": "bk",
                                             "region": "us-east-1", "prefix": ""},
                                     credentials={"access_key_id": "AKIAFACTORY",
                                                  "secret_access_key": s["backup_secret"]})
        db.session.add(backup_target)
        db.session.flush()
        backup = Backup(organisation_id=org.id, slice_id=slice_.id, target_id=backup_target.id,
                        status=BackupStatus.SUCCEEDED, database=slice_.name,
                        key=f"postgres/{slice_.name}/20261201T000000Z-1.dump", size_bytes=5,
                        sha256="0" * 64)
        db.session.add(backup)
        db.session.commit()
    channel = None
    # (tests/db/test_migrations.py builds graphs at revisions before the channels' table)
    if sa.inspect(db.engine).has_table("notification_channels"):
        channel = NotificationChannel(
            organisation_id=org.id, name="factory", kind="slack", config={}, events=[],
            secrets={"url": f"https://hooks.example.com/{s['channel_url']}"})
        db.session.add(channel)
        db.session.commit()
    membership = invitation = None
    if sa.inspect(db.engine).has_table("invitations"):
        import datetime as dt
        import secrets as _secrets

        from app.members import hash_token
        from app.models import Invitation, Membership
        from app.models.base import utcnow
        from app.models.enums import MembershipRole
        membership = db.session.execute(sa.select(Membership).where(
            Membership.user_id == user.id, Membership.organisation_id == org.id)).scalar_one()
        invitation = Invitation(organisation_id=org.id, email=f"invitee-{org.id}@example.com",
                                role=MembershipRole.VIEWER, invited_by_id=user.id,
                                token_hash=hash_token(_secrets.token_urlsafe(32)),
                                expires_at=utcnow() + dt.timedelta(days=7))
        db.session.add(invitation)
        db.session.commit()
    return OrgGraph(user, org, provider, server, application, environment, web, postgres,
                    replica, slice_, attachment, variable, endpoint, operation, step, registry,
                    artifact, api_token, token, backup_target, backup, channel, membership,
                    invitation)
