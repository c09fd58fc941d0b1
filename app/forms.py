"""WTForms shared by the blueprints (account forms)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, EqualTo, Length, Regexp


class SignupForm(FlaskForm):
    organisation = StringField("Organisation name", validators=[
        DataRequired(), Length(max=120)])
    name = StringField("Your name", validators=[Length(max=120)])
    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False),
                                            Length(max=254)])
    password = PasswordField("Password", validators=[
        DataRequired(), Length(min=10, max=200, message="Use at least 10 characters.")])
    confirm = PasswordField("Repeat password", validators=[
        DataRequired(), EqualTo("password", message="The passwords differ.")])


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False)])
    password = PasswordField("Password", validators=[DataRequired()])


NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
NAME_MESSAGE = ("Use 1-63 lower-case letters, digits and hyphens, starting and ending "
                "with a letter or digit.")


def name_field(label: str = "Name") -> StringField:
    """A resource name that is safe in container, volume, host and file names."""
    return StringField(label, validators=[DataRequired(), Regexp(NAME_RE, message=NAME_MESSAGE)])
