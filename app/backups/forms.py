"""Forms of the backups pages: every field reaching a path, a URL or a command is
checked by allowlist here (the handlers and app.shell quote what they pass on)."""
from __future__ import annotations

from wtforms import IntegerField, PasswordField, RadioField, SelectField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from app.backups import MAX_KEEP
from app.backups.targets import (BUCKET_RE, ENDPOINT_RE, PREFIX_RE, REGION_RE, TargetError,
                                 validate_directory)
from app.drivers.secrets import validate_identifier
from app.forms import KeystoneForm, name_field
from app.models.backup import BackupFrequency, BackupTargetKind


class TargetForm(KeystoneForm):
    name = name_field("Name")
    kind = SelectField("Kind", choices=[(BackupTargetKind.DIRECTORY.value,
                                         "Directory on the Keystone host (over SFTP)"),
                                        (BackupTargetKind.S3.value, "S3-compatible store")],
                       default=BackupTargetKind.DIRECTORY.value)
    path = StringField("Directory", validators=[Optional(), Length(max=255)])
    endpoint_url = StringField("Endpoint URL", validators=[Optional(), Length(max=255)])
    region = StringField("Region", validators=[Optional(), Length(max=32)])
    bucket = StringField("Bucket", validators=[Optional(), Length(max=63)])
    prefix = StringField("Prefix", validators=[Optional(), Length(max=200)])
    access_key_id = StringField("Access key ID", validators=[Optional(), Length(max=128)])
    secret_access_key = PasswordField("Secret access key", validators=[Optional(), Length(max=256)])

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators=extra_validators)
        if self.kind.data == BackupTargetKind.DIRECTORY.value:
            try:
                self.path.data = validate_directory(self.path.data or "")
            except TargetError as exc:
                self.path.errors.append(str(exc))
                ok = False
            return ok
        checks = [(self.bucket, BUCKET_RE, True, "3-63 lowercase letters, digits, '.' and '-'."),
                  (self.endpoint_url, ENDPOINT_RE, False, "An http(s)://host[:port] URL."),
                  (self.region, REGION_RE, False, "Lowercase letters, digits and '-'."),
                  (self.prefix, PREFIX_RE, False, "Letters, digits, '.', '_', '-' and '/'.")]
        for field, pattern, required, message in checks:
            value = (field.data or "").strip()
            field.data = value
            if (required and not value) or (value and not pattern.fullmatch(value)):
                field.errors.append(message)
                ok = False
        for field in (self.access_key_id, self.secret_access_key):
            if not (field.data or "").strip():
                field.errors.append("Required for an S3 target.")
                ok = False
        return ok

    def config(self) -> dict:
        if self.kind.data == BackupTargetKind.DIRECTORY.value:
            return {"path": self.path.data}
        return {"endpoint_url": self.endpoint_url.data or None, "region": self.region.data or None,
                "bucket": self.bucket.data, "prefix": (self.prefix.data or "").strip("/")}

    def credentials(self) -> dict | None:
        if self.kind.data == BackupTargetKind.DIRECTORY.value:
            return None
        return {"access_key_id": self.access_key_id.data.strip(),
                "secret_access_key": self.secret_access_key.data.strip()}


class PolicyForm(KeystoneForm):
    target_id = SelectField("Target", coerce=int, choices=[], validate_choice=True)
    frequency = SelectField("Schedule", choices=[(f.value, f.value) for f in BackupFrequency],
                            default=BackupFrequency.DAILY.value)
    keep = IntegerField("Keep the newest", default=7,
                        validators=[DataRequired(message="A number from 1 to %d." % MAX_KEEP),
                                    NumberRange(min=1, max=MAX_KEEP)])


class BackupNowForm(KeystoneForm):
    target_id = SelectField("Target", coerce=int, choices=[], validate_choice=True)


class RestoreForm(KeystoneForm):
    mode = RadioField("Restore into", choices=[("same", "the same database (replaces its data)"),
                                               ("new", "a new database")], default="new")
    confirm = StringField("Type the database's name to confirm",
                          validators=[Optional(), Length(max=63)])
    new_name = StringField("New database name", validators=[Optional(), Length(max=63)])

    def __init__(self, *args, database: str = "", **kw):
        super().__init__(*args, **kw)
        self.database = database

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators=extra_validators)
        if self.mode.data == "same":
            if (self.confirm.data or "").strip() != self.database:
                self.confirm.errors.append(f"Type {self.database} exactly: its data is replaced.")
                ok = False
        else:
            name = (self.new_name.data or "").strip()
            try:
                validate_identifier("database", name)
            except ValueError as exc:
                self.new_name.errors.append(str(exc))
                ok = False
            self.new_name.data = name
        return ok


__all__ = ["TargetForm", "PolicyForm", "BackupNowForm", "RestoreForm"]
