"""A Laravel service's deploy settings (SPEC 17, 18): its advanced section.

Migration mode, timing and command; pre-switch commands (one per line, each split into
argv and validated, never a shell line); the health check of new replicas (path,
interval, timeout, retries); the stop grace period. Everything is written through
:func:`app.drivers.laravel.settings.apply_deploy_settings`, the one writer of these keys
of ``Service.config``, and read back through the same typed settings by the deploy, the
compose renderer and the manual "Run migrations". An error names its setting's path
(``web.health.path: must start with /``) and is shown on its field.
"""
from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for
from wtforms import DecimalField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import Length, NumberRange, Optional

from app.blueprints.environments.blueprint import bp
from app.drivers.laravel.settings import (MIGRATION_MODES, MIGRATION_TIMINGS, LaravelSettings,
                                          SettingsError, apply_deploy_settings)
from app.policy import requires
from app.extensions import db
from app.forms import KeystoneForm
from app.models import Environment, Service
from app.oneoff.argv import CommandError, display, parse_argv
from app.scoping import get_child_or_404, get_for_org_or_404

LARAVEL = "laravel"


class DeploySettingsForm(KeystoneForm):
    migration_mode = SelectField("Migration mode", choices=[
        ("auto", "auto: run during each deploy"), ("manual", "manual: I run them"),
        ("disabled", "disabled")])
    migration_timing = SelectField("Migration timing", choices=[
        ("pre_switch", "before the switch (old code still serving)"),
        ("post_switch", "after the switch")])
    migration_command = StringField("Migration command", validators=[Length(max=500)])
    pre_switch_commands = TextAreaField("Pre-switch commands", validators=[Length(max=4000)])
    health_path = StringField("Health check path", validators=[Length(max=200)])
    health_interval = DecimalField("Interval (seconds)", places=None,
                                   validators=[Optional(), NumberRange(min=0.2, max=60)])
    health_timeout = DecimalField("Timeout (seconds)", places=None,
                                  validators=[Optional(), NumberRange(min=0.5, max=60)])
    health_retries = IntegerField("Retries", validators=[Optional(), NumberRange(min=1, max=600)])
    stop_grace_seconds = IntegerField("Stop grace period (seconds)",
                                      validators=[Optional(), NumberRange(min=0, max=86400)])


# The end of a setting's path -> the field that shows its error.
_FIELD_OF = (("pre_switch_commands", "pre_switch_commands"), ("migration_mode", "migration_mode"),
             ("migration_timing", "migration_timing"), ("migration_command", "migration_command"),
             ("health.path", "health_path"), ("health.interval", "health_interval"),
             ("health.timeout", "health_timeout"), ("health.retries", "health_retries"),
             ("stop_grace_seconds", "stop_grace_seconds"))


def _field_for(message: str, where: str) -> str:
    path = message.split(":", 1)[0].removeprefix(where + ".")
    for key, name in _FIELD_OF:
        if path.startswith(key):
            return name
    return "migration_command"


def _load(environment_id, service_id) -> tuple[Environment, Service]:
    env = get_for_org_or_404(Environment, environment_id)
    service = get_child_or_404(env, Service, service_id, "environment_id")
    if service.type != LARAVEL:
        abort(404)
    return env, service


def _initial(service: Service) -> dict:
    s = LaravelSettings.from_config(service.config, service.name)
    health = (service.config or {}).get("health") or {}
    return {"migration_mode": s.migration.mode, "migration_timing": s.migration.timing,
            "migration_command": s.migration.command,
            "pre_switch_commands": "\n".join(display(list(a)) for a in s.pre_switch),
            "health_path": s.health.path, "health_interval": health.get("interval"),
            "health_timeout": health.get("timeout"), "health_retries": health.get("retries"),
            "stop_grace_seconds": (service.config or {}).get("stop_grace_seconds")}


def _number(value, whole: bool = False):
    if value is None:
        return None
    return int(value) if whole else float(value)


@bp.route("/<int:environment_id>/services/<int:service_id>/settings", methods=["GET", "POST"])
@requires("resources.manage")
def service_settings(environment_id, service_id):
    env, service = _load(environment_id, service_id)
    form = DeploySettingsForm()
    if not form.is_submitted():
        try:
            form = DeploySettingsForm(data=_initial(service))
        except SettingsError as exc:  # a value set by hand that no longer reads: say so
            flash(str(exc), "error")
    elif form.validate():
        pre_switch, errors = [], []
        for n, line in enumerate(form.pre_switch_commands.data.splitlines(), 1):
            if line.strip():
                try:
                    pre_switch.append(parse_argv(line.strip()))
                except CommandError as exc:
                    errors.append(f"{service.name}.pre_switch_commands line {n}: {exc}")
        form.pre_switch_commands.errors = list(form.pre_switch_commands.errors) + errors
        if not errors:
            try:
                config = apply_deploy_settings(
                    service.config, service.name,
                    migration_mode=form.migration_mode.data,
                    migration_timing=form.migration_timing.data,
                    migration_command=form.migration_command.data or "",
                    pre_switch=pre_switch, health_path=(form.health_path.data or "").strip(),
                    health_interval=_number(form.health_interval.data),
                    health_timeout=_number(form.health_timeout.data),
                    health_retries=_number(form.health_retries.data, whole=True),
                    stop_grace_seconds=_number(form.stop_grace_seconds.data, whole=True))
            except SettingsError as exc:
                field = getattr(form, _field_for(str(exc), service.name))
                field.errors = list(field.errors) + [str(exc)]
            else:
                service.config = config
                db.session.commit()
                flash(f"Deploy settings of {service.name} saved: the next deploy uses them.",
                      "success")
                return redirect(url_for("environments.show", environment_id=env.id))
    return render_template("environments/service_settings.html", env=env, service=service,
                           form=form, modes=MIGRATION_MODES, timings=MIGRATION_TIMINGS), \
        (400 if form.errors else 200)
