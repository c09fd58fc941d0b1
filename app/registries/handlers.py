"""The ``image_check`` operation: ask the registry whether a service's version track moved
(worker only). Records the newer digest as available; never deploys.

The page shows ``operation.result["message"]`` (or the error) next to the digests.
"""
from __future__ import annotations

import sqlalchemy as sa

from app.drivers import get_driver
from app.drivers.base import DriverError
from app.extensions import db
from app.models import Registry, Service
from app.models.enums import OperationKind
from app.operations import StepFailed, operation_handler
from app.registries.images import ImageError
from app.services_ops.updates import check_for_update


def outcome_message(service: Service, digest: str | None) -> str:
    if digest:
        return "A newer image is available on the same version track."
    if not service.current_image_digest:
        return "Not deployed yet: the first deploy resolves the newest image."
    return "The service runs the newest image of its version track."


@operation_handler(OperationKind.IMAGE_CHECK)
def check_image(ctx) -> None:
    service: Service | None = ctx.target
    if service is None:
        raise StepFailed("The service no longer exists.")
    for password in db.session.execute(sa.select(Registry.password).where(
            Registry.organisation_id == service.organisation_id)).scalars():
        ctx.runtime.add_secret(password)
    with ctx.step("Ask the registry for the version track's digest") as step:
        try:
            step.log(f"resolving {get_driver(service).image(service)}")
            digest = check_for_update(service)
        except (ImageError, DriverError) as exc:
            db.session.rollback()
            raise StepFailed(f"Could not check for updates: {exc}") from None
        db.session.commit()
        message = outcome_message(service, digest)
        ctx.result.update({"message": message, "available": digest})
        step.log(message if not digest else f"{message} ({digest})")
