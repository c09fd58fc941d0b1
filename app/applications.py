"""Creating applications and environments (SPEC 2 and 8): the domain code the
applications views, the onboarding wizard and the sandbox testbed share.

Creating an application generates its ed25519 deploy key and a ``production``
environment on the default branch with the default web service (Laravel,
deployed with the environment, scheduler on it).
"""
from __future__ import annotations

from app.app_key import ensure_app_key
from app.extensions import db
from app.models import Application, Environment, Service
from app.models.enums import DeployPolicy, RepositoryType, SchedulerMode, ServiceCategory
from app.repositories import assign_deploy_key
from app.repositories import validation as rv


def apply_repository_type(application: Application, choice: str) -> None:
    """``choice`` is a RepositoryType value, or "auto" (or empty): detect it from the URL."""
    if choice and choice != "auto":
        application.repository_type = RepositoryType(choice)
    else:
        application.repository_type = rv.parse_repository_url(application.repository_url).repository_type


def create_application(org_id: int, name: str, repository_url: str, default_branch: str,
                       repository_type: str = "auto") -> Application:
    """The application, its deploy key, and a production environment with the web service."""
    application = Application(organisation_id=org_id, name=name, repository_url=repository_url,
                              default_branch=default_branch)
    apply_repository_type(application, repository_type)
    assign_deploy_key(application)
    db.session.add(application)
    create_environment(application, "production", default_branch)
    return application


def create_environment(application: Application, name: str, branch: str) -> Environment:
    environment = Environment(application=application, name=name, branch=branch,
                              build_config={}, scheduler_enabled=True,
                              scheduler_mode=SchedulerMode.SINGLE)
    web = Service(organisation_id=application.organisation_id, environment=environment, name="web",
                  category=ServiceCategory.APPLICATION, type="laravel", driver_name="laravel",
                  deploy_policy=DeployPolicy.WITH_ENVIRONMENT, process_roles=["web"],
                  desired_replicas=1)
    db.session.add_all([environment, web])
    db.session.flush()
    environment.scheduler_target_service = web
    ensure_app_key(environment)   # APP_KEY=base64:..., a secret system variable, made once
    return environment
