"""WTForms shared by the blueprints: the base form every form derives from, the
full-match validator, and the account forms.

Every Keystone form derives from :class:`KeystoneForm`, which refuses control
characters (NUL, escape, line breaks in single-line fields, ...) in every text
field, with a message on the field, before anything is stored.
"""
from __future__ import annotations

import re

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField, TextAreaField
from wtforms.validators import DataRequired, Email, EqualTo, Length, Regexp, ValidationError

# C0 and C1 controls, DEL, lone surrogates and the Unicode line/paragraph separators.
SINGLE_LINE_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Multi-line fields (private keys, variable values) keep TAB, LF and CR.
MULTI_LINE_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
CONTROL_MESSAGE = ("Remove the control characters (such as a NUL byte, an escape, a tab or a "
                   "line break) from this field.")
MULTI_LINE_CONTROL_MESSAGE = ("Remove the control characters (such as a NUL byte or an escape) "
                              "from this field.")


def forbidden_characters(field) -> str | None:
    """The error message for a text field holding control characters, or None."""
    data = field.data
    if not isinstance(field, StringField) or not isinstance(data, str):
        return None
    if isinstance(field, TextAreaField):
        return MULTI_LINE_CONTROL_MESSAGE if MULTI_LINE_FORBIDDEN.search(data) else None
    return CONTROL_MESSAGE if SINGLE_LINE_FORBIDDEN.search(data) else None


class KeystoneForm(FlaskForm):
    """The base of every form: no control characters in any text field."""

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators=extra_validators)
        for field in self:
            message = forbidden_characters(field)
            if message:
                field.errors = [message, *[e for e in field.errors if e != message]]
                ok = False
        return ok


class FullMatch(Regexp):
    """Regexp that must match the whole value (WTForms' Regexp uses re.match, so
    ``^name$`` lets ``"name\\n"`` through)."""

    def __call__(self, form, field, message=None):
        if not self.regex.fullmatch(field.data or ""):
            raise ValidationError(self.message or field.gettext("Invalid input."))


class SignupForm(KeystoneForm):
    organisation = StringField("Organisation name", validators=[
        DataRequired(), Length(max=120)])
    name = StringField("Your name", validators=[Length(max=120)])
    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False),
                                            Length(max=254)])
    password = PasswordField("Password", validators=[
        DataRequired(), Length(min=10, max=200, message="Use at least 10 characters.")])
    confirm = PasswordField("Repeat password", validators=[
        DataRequired(), EqualTo("password", message="The passwords differ.")])


class LoginForm(KeystoneForm):
    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False)])
    password = PasswordField("Password", validators=[DataRequired()])


class TwoFactorCodeForm(KeystoneForm):
    """A 6-digit code from the authenticator app, or a recovery code (XXXX-XXXX-XXXX-XXXX)."""
    code = StringField("Code", validators=[DataRequired(), Length(max=40)],
                       render_kw={"autocomplete": "one-time-code", "spellcheck": "false",
                                  "autocapitalize": "off"})


NAME_RE = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
NAME_MESSAGE = ("Use 1-63 lower-case letters, digits and hyphens, starting and ending "
                "with a letter or digit.")


def name_field(label: str = "Name") -> StringField:
    """A resource name that is safe in container, volume, host and file names."""
    return StringField(label, validators=[DataRequired(), FullMatch(NAME_RE, message=NAME_MESSAGE)])


class ActionForm(KeystoneForm):
    """CSRF only: the form of a button that changes something."""
