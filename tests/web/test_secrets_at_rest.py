"""No secret's plaintext is stored; rotate-keys re-encrypts under the newest key."""
import sqlalchemy as sa
from cryptography.fernet import Fernet

from app.crypto import encrypted_columns, keyring
from app.extensions import db
from app.models import Application, Server
from tests.factories import SECRET_SENTINELS, build_org


def _raw_dump(session) -> str:
    parts = []
    for table in db.metadata.sorted_tables:
        for row in session.execute(sa.text(f'SELECT * FROM "{table.name}"')).all():
            parts.append(repr(tuple(row)))
    return "\n".join(parts)


def test_no_secret_plaintext_in_raw_rows(app):
    build_org()
    raw = _raw_dump(db.session)
    for name, sentinel in SECRET_SENTINELS.items():
        assert sentinel not in raw, f"{name} stored in plaintext"
    # and the ORM still reads them back
    assert db.session.execute(sa.select(Application)).scalar_one().deploy_key_private == \
        SECRET_SENTINELS["deploy_key"]


def test_every_spec_secret_field_is_encrypted():
    names = {f"{t.name}.{c.name}" for t, c in encrypted_columns(db.metadata)}
    for required in ["applications.deploy_key_private", "service_slices.credentials",
                     "environment_variables.value", "operation_steps.secrets",
                     "providers.api_token", "registries.password",
                     "organisations.management_key_private"]:
        assert required in names


def test_rotate_keys_command_reencrypts_under_newest_key(app):
    build_org()
    old_keys = list(app.config["ENCRYPTION_KEYS"])
    new_key = Fernet.generate_key().decode()
    before = db.session.execute(sa.text("SELECT api_token FROM providers")).scalar_one()
    keyring.configure([new_key] + old_keys)
    db.session.expire_all()
    result = app.test_cli_runner().invoke(args=["rotate-keys"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted" in result.output
    after = db.session.execute(sa.text("SELECT api_token FROM providers")).scalar_one()
    assert after != before
    # Only the new key is needed now: every secret still decrypts.
    keyring.configure([new_key])
    db.session.expire_all()
    try:
        assert db.session.execute(sa.select(Server)).scalar_one().bootstrap_password == \
            SECRET_SENTINELS["bootstrap_password"]
        assert Fernet(new_key.encode()).decrypt(after.encode()).decode() == \
            SECRET_SENTINELS["provider_token"]
    finally:
        keyring.configure(old_keys)
