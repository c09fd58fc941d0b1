"""Postgres backups (issue 17.3): targets, per-slice schedule and retention, "back up
now", restore (same database with a typed name, or a new database), download.

Views stay thin: every change is an operation (:mod:`app.backups.handlers`); the
section on the service page is one HTMX fragment, polled while a backup or restore
runs. A download of a directory target is read from the Keystone host's disk; an S3
one is a short-lived presigned URL (computed locally, no network in the view).
"""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, redirect, render_template, request, send_file, url_for
from flask_login import current_user

from app.backups import human_size, is_late, next_due
from app.backups.forms import BackupNowForm, PolicyForm, RestoreForm, TargetForm
from app.blueprints.helpers import hx_redirect
from app.drivers import get_driver
from app.extensions import db
from app.forms import ActionForm
from app.models import Operation, Service, ServiceSlice
from app.models.backup import (Backup, BackupPolicy, BackupStatus, BackupTarget,
                               BackupTargetKind)
from app.models.base import utcnow
from app.models.enums import OperationKind, SliceStatus, SliceType
from app.operations import OperationLocked, StepFailed
from app.scoping import current_org_id, get_child_or_404, get_for_org_or_404
from app.policy import requires

bp = Blueprint("backups", __name__)
bp.add_app_template_filter(human_size, "human_size")
KINDS = (OperationKind.DATABASE_BACKUP.value, OperationKind.DATABASE_RESTORE.value)


def _targets() -> list[BackupTarget]:
    return db.session.execute(sa.select(BackupTarget).where(
        BackupTarget.organisation_id == current_org_id()).order_by(BackupTarget.name)).scalars().all()


# --------------------------------------------------------------------------- targets

@bp.route("/backups/targets", methods=["GET", "POST"])
@requires("resources.manage")
def targets():
    form = TargetForm()
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            if any(t.name == form.name.data for t in _targets()):
                form.name.errors.append("A backup target with this name exists.")
            else:
                db.session.add(BackupTarget(organisation_id=current_org_id(), name=form.name.data,
                                            kind=BackupTargetKind(form.kind.data),
                                            config=form.config(), credentials=form.credentials()))
                db.session.commit()
                return redirect(url_for("backups.targets", next=request.args.get("next")))
        status = 400
    return render_template("backups/targets.html", form=form, targets=_targets()), status


# --------------------------------------------------------------------------- service section

def _postgres_slices(service: Service) -> list[ServiceSlice]:
    return [s for s in service.slices if s.type == SliceType.POSTGRES_DATABASE
            and s.status not in (SliceStatus.DELETED, SliceStatus.DELETING)]


def section_context(service: Service, **kw) -> dict:
    slices = _postgres_slices(service)
    ids = [s.id for s in slices] or [-1]
    policies = {p.slice_id: p for p in db.session.execute(
        sa.select(BackupPolicy).where(BackupPolicy.slice_id.in_(ids))).scalars()}
    backups = db.session.execute(sa.select(Backup).where(
        Backup.slice_id.in_(ids), Backup.status != BackupStatus.DELETED.value)
        .order_by(Backup.id.desc()).limit(50)).scalars().all()
    active = db.session.execute(sa.select(Operation).where(
        Operation.kind.in_(KINDS), Operation.target_type == "service_slice",
        Operation.target_id.in_(ids), Operation.status.in_(("pending", "queued", "running")))
    ).scalars().all()
    targets = _targets()
    choices = [(t.id, f"{t.name} ({t.describe()})") for t in targets]
    now = utcnow()
    rows = []
    for s in slices:
        p = policies.get(s.id)
        pform = kw.get("policy_forms", {}).get(s.id) or PolicyForm(formdata=None, obj=p)
        pform.target_id.choices = choices
        nform = kw.get("now_forms", {}).get(s.id) or BackupNowForm(formdata=None)
        nform.target_id.choices = choices
        if p is not None:
            nform.target_id.data = p.target_id
        rows.append({"slice": s, "policy": p, "policy_form": pform, "now_form": nform,
                     "next_due": p and next_due(p.frequency, p.last_scheduled_at, p.created_at),
                     "late": bool(p and is_late(p.frequency, p.last_scheduled_at,
                                                p.created_at, now)),
                     "backups": [b for b in backups if b.slice_id == s.id]})
    return {"service": service, "rows": rows, "targets": targets, "active": active,
            "action_form": ActionForm(formdata=None), "backup_error": kw.get("backup_error")}


@bp.route("/services/<int:service_id>/backups")
@requires("read")
def section(service_id):
    service = get_for_org_or_404(Service, service_id)
    return render_template("backups/_section.html", **section_context(service))


def _slice(service_id, slice_id) -> tuple[Service, ServiceSlice]:
    service = get_for_org_or_404(Service, service_id)
    slice_ = get_child_or_404(service, ServiceSlice, slice_id, "service_id")
    if slice_.type != SliceType.POSTGRES_DATABASE:
        abort(404)
    return service, slice_


def _error_status() -> int:
    """htmx 2 swaps only 2xx answers: a fragment with errors is 200 for HTMX, else 400."""
    return 200 if request.htmx else 400


def _target_or_none(target_id) -> BackupTarget | None:
    return next((t for t in _targets() if t.id == target_id), None)


@bp.route("/services/<int:service_id>/slices/<int:slice_id>/backups/policy", methods=["POST"])
@requires("resources.manage")
def save_policy(service_id, slice_id):
    service, slice_ = _slice(service_id, slice_id)
    form = PolicyForm()
    form.target_id.choices = [(t.id, t.name) for t in _targets()]
    if not form.validate_on_submit():
        return render_template("backups/_section.html",
                               **section_context(service, policy_forms={slice_.id: form})), \
            _error_status()
    policy = db.session.execute(sa.select(BackupPolicy).where(
        BackupPolicy.slice_id == slice_.id)).scalar_one_or_none()
    if policy is None:
        policy = BackupPolicy(slice_id=slice_.id, target_id=form.target_id.data)
        db.session.add(policy)
    if policy.frequency != form.frequency.data:
        policy.last_scheduled_at = None  # a new schedule starts with a backup at the next tick
    policy.target_id = form.target_id.data
    policy.frequency = form.frequency.data
    policy.keep = form.keep.data
    db.session.commit()
    return render_template("backups/_section.html", **section_context(service))


@bp.route("/services/<int:service_id>/slices/<int:slice_id>/backups/now", methods=["POST"])
@requires("deploy")
def backup_now(service_id, slice_id):
    from app.backups.handlers import start_backup
    service, slice_ = _slice(service_id, slice_id)
    form = BackupNowForm()
    form.target_id.choices = [(t.id, t.name) for t in _targets()]
    if form.validate_on_submit():
        try:
            op = start_backup(slice_, _target_or_none(form.target_id.data), user=current_user)
        except (StepFailed, OperationLocked) as exc:
            return render_template("backups/_section.html",
                                   **section_context(service, backup_error=str(exc))), \
                _error_status()
        return hx_redirect(url_for("operations.show", operation_id=op.id))
    return render_template("backups/_section.html",
                           **section_context(service, now_forms={slice_.id: form})), \
        _error_status()


# --------------------------------------------------------------------------- one backup

def _backup(backup_id) -> Backup:
    backup = db.session.get(Backup, backup_id)
    if backup is None or backup.organisation_id != current_org_id():
        abort(404)
    return backup


@bp.route("/backups/<int:backup_id>/restore", methods=["GET", "POST"])
@requires("resources.manage")
def restore(backup_id):
    from app.backups.handlers import start_restore
    backup = _backup(backup_id)
    if backup.status != BackupStatus.SUCCEEDED:
        abort(404)
    source = backup.slice
    service = source.service
    form = RestoreForm(database=backup.database)
    error = None
    if form.validate_on_submit():
        try:
            if form.mode.data == "same":
                op = start_restore(backup, source, user=current_user,
                                   confirm=form.confirm.data.strip())
            else:
                name = form.new_name.data
                if any(s.name == name and s.type == SliceType.POSTGRES_DATABASE
                       for s in service.slices):
                    form.new_name.errors.append("This service already has a database with this name.")
                    raise _FormError
                config, credentials = get_driver(service).new_slice_config(name)
                new = ServiceSlice(service=service, name=name, type=SliceType.POSTGRES_DATABASE,
                                   status=SliceStatus.PENDING, config=config,
                                   credentials=credentials)
                db.session.add(new)
                db.session.commit()
                op = start_restore(backup, new, user=current_user)
        except _FormError:
            pass
        except (StepFailed, OperationLocked) as exc:
            error = str(exc)
        else:
            return hx_redirect(url_for("operations.show", operation_id=op.id))
    status = 400 if request.method == "POST" else 200
    return render_template("backups/restore.html", backup=backup, service=service, form=form,
                           error=error), status


class _FormError(Exception):
    pass


@bp.route("/backups/<int:backup_id>/download")
@requires("secrets.reveal")
def download(backup_id):
    from app.backups.targets import DirectoryStore, TargetError, store_for
    backup = _backup(backup_id)
    if backup.status != BackupStatus.SUCCEEDED:
        abort(404)
    filename = backup.key.replace("/", "_")
    store = store_for(backup.target)
    if isinstance(store, DirectoryStore):
        try:
            path = store.local_path(backup.key)
        except TargetError:
            abort(404)
        if not path.is_file():
            abort(404)
        return send_file(path, as_attachment=True, download_name=filename,
                         mimetype="application/octet-stream")
    return redirect(store.presigned_url(backup.key, filename))
