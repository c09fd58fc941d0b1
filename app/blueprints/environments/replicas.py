"""Replicas per server and resource limits of a service (issue 20.2, issue 21.7).

* ``POST /environments/<id>/services/<sid>/replicas`` (permission ``deploy``: scaling a
  process is a deploy-level action): records ``desired_replicas`` and starts a
  ``service_scale`` operation (app.deploys.scale) when the service runs; otherwise the
  next deploy starts that many.
* ``GET/POST /environments/<id>/services/<sid>/resources`` (``resources.manage``): the
  service's CPU and memory limits, each replica's ceiling (the service owns them: replica
  rows are new on every deploy), with each server's capacity against the sum of
  ``limit x replicas`` of everything placed there, and a warning when that over-commits.

Every value is read with ``re.fullmatch`` against an allowlist before it is stored; the
limits reach the compose file as data (``cpus: "0.5"``, ``mem_limit: 512m``), never a shell.
"""
from __future__ import annotations

import re

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from wtforms import StringField

from app import audit
from app.blueprints.environments.blueprint import bp
from app.deploys.capacity import loads_for
from app.deploys.planning import SCALED_ROLES, primary_role
from app.deploys.scale import ScaleRefused, start_scale
from app.deploys.service import service_server_ids
from app.deploys.slots import MAX_REPLICAS
from app.extensions import db
from app.forms import KeystoneForm
from app.models import Environment, Service
from app.models.enums import ServiceCategory
from app.operations import OperationLocked
from app.policy import requires
from app.scoping import get_child_or_404, get_for_org_or_404

REPLICAS_RE = r"[1-9][0-9]?"
CPUS_RE = r"([0-9]{1,3})(\.[0-9]{1,2})?"
MEMORY_RE = r"([1-9][0-9]{0,6})\s*(m|mb|mib|g|gb|gib)?"
MAX_CPUS = 256.0
MIN_MEMORY_MB = 6          # Docker's minimum
MAX_MEMORY_MB = 4 * 1024 * 1024


def parse_replicas(raw: str | None, role: str) -> int:
    """Replicas per server from a form value, or ValueError with the reason."""
    value = (raw or "").strip()
    if not re.fullmatch(REPLICAS_RE, value):
        raise ValueError(f"replicas: a whole number from 1 to {MAX_REPLICAS}")
    n = int(value)
    if n > MAX_REPLICAS:
        raise ValueError(f"replicas: at most {MAX_REPLICAS} per server")
    if role not in SCALED_ROLES and n != 1:
        raise ValueError(f"replicas: a {role} service runs one replica per server")
    return n


def parse_cpus(raw: str | None) -> float | None:
    """A CPU limit (``0.5``, ``2``) or None for no limit; ValueError with the reason."""
    value = (raw or "").strip()
    if not value:
        return None
    if not re.fullmatch(CPUS_RE, value):
        raise ValueError("cpus: a number of CPUs such as 0.5 or 2 (at most two decimals)")
    cpus = float(value)
    if not 0 < cpus <= MAX_CPUS:
        raise ValueError(f"cpus: more than 0 and at most {MAX_CPUS:g}")
    return cpus


def parse_memory(raw: str | None) -> int | None:
    """A memory limit in MiB (``512``, ``512m``, ``1g``) or None; ValueError with the reason."""
    value = (raw or "").strip().lower()
    if not value:
        return None
    m = re.fullmatch(MEMORY_RE, value)
    if not m:
        raise ValueError("mem_limit: MiB such as 512, or 512m / 1g")
    mb = int(m.group(1)) * (1024 if (m.group(2) or "m").startswith("g") else 1)
    if not MIN_MEMORY_MB <= mb <= MAX_MEMORY_MB:
        raise ValueError(f"mem_limit: from {MIN_MEMORY_MB} MiB to {MAX_MEMORY_MB // 1024} GiB")
    return mb


class ReplicasForm(KeystoneForm):
    replicas = StringField("Replicas per server")


class ResourcesForm(KeystoneForm):
    cpus = StringField("CPU limit per replica (cpus)")
    mem_limit = StringField("Memory limit per replica (mem_limit)")


def _load(environment_id, service_id) -> tuple[Environment, Service]:
    env = get_for_org_or_404(Environment, environment_id)
    service = get_child_or_404(env, Service, service_id, "environment_id")
    if service.category != ServiceCategory.APPLICATION:
        abort(404)
    return env, service


@bp.route("/<int:environment_id>/services/<int:service_id>/replicas", methods=["POST"])
@requires("deploy")
def scale_service(environment_id, service_id):
    env, service = _load(environment_id, service_id)
    form = ReplicasForm()
    back = redirect(url_for("environments.show", environment_id=env.id))
    if not form.validate():
        flash(f"{service.name}.replicas: "
              + "; ".join(e for errs in form.errors.values() for e in errs), "error")
        return back
    try:
        n = parse_replicas(form.replicas.data, primary_role(service.process_roles or ["web"]))
    except ValueError as exc:
        flash(f"{service.name}.{exc}", "error")
        return back
    if n == service.desired_replicas and request.form.get("force") != "1":
        flash(f"{service.name} already has {n} replica{'s' if n != 1 else ''} per server.",
              "info")
        return back
    try:
        op = start_scale(service, n, user=current_user)
    except (ScaleRefused, OperationLocked) as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return back
    if op is None:
        flash(f"{service.name}: {n} replica{'s' if n != 1 else ''} per server from the next "
              "deploy (nothing runs yet).", "success")
        return back
    flash(f"Scaling {service.name} to {n} per server: operation #{op.id}.", "success")
    return redirect(url_for("operations.show", operation_id=op.id))


@bp.route("/<int:environment_id>/services/<int:service_id>/resources",
          methods=["GET", "POST"])
@requires("resources.manage")
def service_resources(environment_id, service_id):
    env, service = _load(environment_id, service_id)
    form = ResourcesForm()
    if not form.is_submitted():
        form = ResourcesForm(data={
            "cpus": "" if service.default_cpu_limit is None else f"{service.default_cpu_limit:g}",
            "mem_limit": "" if service.default_memory_limit_mb is None
            else str(service.default_memory_limit_mb)})
    elif form.validate():
        values = {}
        for name, parse in (("cpus", parse_cpus), ("mem_limit", parse_memory)):
            field = getattr(form, name)
            try:
                values[name] = parse(field.data)
            except ValueError as exc:
                field.errors = list(field.errors) + [f"{service.name}.{exc}"]
        if not form.errors:
            service.default_cpu_limit = values["cpus"]
            service.default_memory_limit_mb = values["mem_limit"]
            audit.record("service.resources", service,
                         {"cpus": values["cpus"], "memory_mb": values["mem_limit"]})
            db.session.commit()
            flash(f"Resource limits of {service.name} saved: the next deploy starts its "
                  "replicas with them.", "success")
            return redirect(url_for("environments.service_resources", environment_id=env.id,
                                    service_id=service.id))
    return render_template("environments/service_resources.html", env=env, service=service,
                           form=form, loads=loads_for(service_server_ids(service)),
                           max_replicas=MAX_REPLICAS), (400 if form.errors else 200)
