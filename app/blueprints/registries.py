"""Container registries of the organisation: list, create, delete.

Passwords/tokens are stored encrypted and never shown again (the edit form
keeps the stored one when left empty).
"""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, url_for

from wtforms import PasswordField, SelectField, StringField
from wtforms.validators import Length, Optional

from app import registries as reg
from app.extensions import db
from app.forms import KeystoneForm, name_field
from app.models import Environment, Registry
from app.models.enums import RegistryType
from app.scoping import current_org_id, get_for_org_or_404, org_query
from app.policy import requires

bp = Blueprint("registries", __name__, url_prefix="/registries")

TYPE_LABELS = {
    RegistryType.GENERIC.value: "Generic Docker registry",
    RegistryType.GITEA.value: "Gitea",
    RegistryType.GHCR.value: "GitHub Container Registry (ghcr.io)",
    RegistryType.DOCKERHUB.value: "Docker Hub",
}


class RegistryForm(KeystoneForm):
    name = name_field("Name")
    type = SelectField("Type", choices=list(TYPE_LABELS.items()), default=RegistryType.GENERIC.value)
    url = StringField("Address", validators=[Optional(), Length(max=255)])
    namespace = StringField("Namespace (owner)", validators=[Optional(), Length(max=255)])
    username = StringField("Username", validators=[Optional(), Length(max=255)])
    password = PasswordField("Password or token", validators=[Optional(), Length(max=4096)])


@bp.route("/")
@requires("read")
def index():
    registries = db.session.execute(org_query(Registry).order_by(Registry.name)).scalars().all()
    used = {}
    for r in registries:
        used[r.id] = db.session.execute(
            sa.select(sa.func.count(Environment.id)).where(Environment.registry_id == r.id)).scalar_one()
    return render_template("registries/index.html", registries=registries, used=used,
                           labels=TYPE_LABELS)


@bp.route("/new", methods=["GET", "POST"])
@requires("registries.manage")
def new():
    form = RegistryForm()
    if form.validate_on_submit():
        org_id = current_org_id()
        try:
            rtype = RegistryType(form.type.data)
            url = reg.normalise_url(form.url.data, rtype)
            username = reg.validate_username(form.username.data)
            namespace = reg.normalise_namespace(form.namespace.data, rtype, username)
        except reg.RegistryError as exc:
            field_name, _, message = str(exc).partition(": ")
            getattr(form, field_name, form.url).errors.append(message or str(exc))
        else:
            exists = db.session.execute(sa.select(Registry.id).where(
                Registry.organisation_id == org_id, Registry.name == form.name.data)).first()
            if exists:
                form.name.errors.append("A registry with this name already exists.")
            elif bool(username) != bool(form.password.data):
                form.password.errors.append("Give both a username and a password/token, or neither.")
            else:
                registry = Registry(organisation_id=org_id, name=form.name.data, type=rtype,
                                    url=url, namespace=namespace, username=username,
                                    password=form.password.data or None)
                db.session.add(registry)
                db.session.commit()
                flash(f"Registry {registry.name} added. Choose it in an environment's build "
                      "settings; its images are pushed there.", "success")
                return redirect(url_for("registries.index"))
    return render_template("registries/new.html", form=form, labels=TYPE_LABELS), \
        (400 if form.errors else 200)


@bp.route("/<int:registry_id>/delete", methods=["POST"])
@requires("registries.manage")
def delete(registry_id):
    registry = get_for_org_or_404(Registry, registry_id)
    db.session.delete(registry)
    db.session.commit()
    flash(f"Registry {registry.name} removed.", "success")
    return redirect(url_for("registries.index"))
