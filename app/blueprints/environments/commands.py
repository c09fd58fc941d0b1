"""The commands component: one-click artisan commands, any typed argv, and (manual
migration mode, SPEC 18) "Run migrations" with the pending-migrations warning.

Each action starts ONE ``command_run`` operation (app.oneoff) and sends the browser to
its live log; errors come back in the component (HTMX) or on the page, never a 500.
"""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from wtforms import HiddenField, IntegerField, StringField
from wtforms.validators import Length, NumberRange, Optional

from app.blueprints.environments.blueprint import bp
from app.policy import requires
from app.blueprints.environments.page import load_environment, render_page
from app.forms import KeystoneForm
from app.models import Environment
from app.oneoff.argv import MAX_TEXT, PRESETS, CommandError, parse_argv
from app.oneoff.service import (MIN_TIMEOUT, max_timeout, migration_argv, migration_state,
                                start_command)
from app.models.enums import OperationKind
from app.operations import OperationLocked
from app.operations.registry import timeout_for


class CommandForm(KeystoneForm):
    preset = HiddenField()
    command = StringField("Command", validators=[Optional(), Length(max=MAX_TEXT)])
    timeout_minutes = IntegerField("Time limit (minutes)", default=10,
                                   validators=[Optional(), NumberRange(
                                       min=1, max=timeout_for(OperationKind.COMMAND_RUN) // 60)])


def commands_context(env: Environment, form: CommandForm | None = None,
                     error: str | None = None) -> dict:
    return {"env": env, "form": form or CommandForm(formdata=None, prefix="cmd"),
            "presets": list(PRESETS.values()), "migrations": migration_state(env),
            "error": error, "max_minutes": max_timeout() // 60}


def _refused(env: Environment, form: CommandForm, error: str):
    ctx = commands_context(env, form, error)
    if request.htmx:
        return render_template("environments/_commands.html", c=ctx), 200  # htmx swaps 2xx
    return render_page(env.id, commands=ctx, status=422)


def _started(op):
    target = url_for("operations.show", operation_id=op.id)
    if request.htmx:
        return "", 204, {"HX-Redirect": target}
    flash(f"Operation #{op.id} started: {op.summary}.", "success")
    return redirect(target)


@bp.route("/<int:environment_id>/commands", methods=["POST"])
@requires("deploy")
def run_command(environment_id):
    env = load_environment(environment_id)
    form = CommandForm(prefix="cmd")
    if not form.validate_on_submit():
        return _refused(env, form, "Check the form: " + "; ".join(
            f"{getattr(form, k).label.text}: {' '.join(v)}" for k, v in form.errors.items()))
    try:
        preset = form.preset.data or ""
        if preset == "configured-migrate":
            argv = migration_argv(env)
        elif preset:
            if preset not in PRESETS:
                raise CommandError("Unknown one-click command.")
            argv = list(PRESETS[preset].argv)
        else:
            argv = parse_argv(form.command.data or "")
        minutes = form.timeout_minutes.data
        timeout = max(MIN_TIMEOUT, int(minutes) * 60) if minutes else None
        op = start_command(env, argv, current_user, timeout_seconds=timeout)
    except CommandError as exc:
        return _refused(env, form, str(exc))
    except OperationLocked as exc:
        return _refused(env, form, f"Refused: {exc}")
    return _started(op)
