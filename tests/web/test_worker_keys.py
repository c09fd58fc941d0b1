"""A worker that shares the database (e.g. on another machine) refuses to start without the
web's KEYSTONE_ENCRYPTION_KEYS, instead of failing every operation that reads a secret."""
from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from app.accounts import create_account
from app.crypto import keyring, undecryptable_column
from app.jobs.worker import check_encryption_keys
from tests.conftest import KEYS


def _org_with_secret(db):
    user = create_account(organisation="Keys", email="keys@example.com",
                          password="correct horse battery")
    user.organisation.management_key_private = "-----BEGIN OPENSSH PRIVATE KEY----- x"
    db.session.commit()
    return user.organisation


def test_the_web_keys_pass(app, db):
    _org_with_secret(db)
    assert undecryptable_column(db.session, db.metadata) is None
    check_encryption_keys(app)  # does not raise


def test_other_keys_name_the_column_and_the_worker_refuses_to_start(app, db):
    _org_with_secret(db)
    keyring.configure([Fernet.generate_key().decode()])  # what a worker without the keys makes
    try:
        assert undecryptable_column(db.session, db.metadata) == \
            "organisations.management_key_private"
        with pytest.raises(SystemExit) as exc:
            check_encryption_keys(app)
        assert "KEYSTONE_ENCRYPTION_KEYS" in str(exc.value)
        assert "organisations.management_key_private" in str(exc.value)
    finally:
        keyring.configure(KEYS)


def test_an_older_key_still_decrypts(app, db):
    """Rotation: the newest key first, the old one still listed, is a match."""
    _org_with_secret(db)
    keyring.configure([Fernet.generate_key().decode(), *KEYS])
    try:
        assert undecryptable_column(db.session, db.metadata) is None
    finally:
        keyring.configure(KEYS)


def test_an_empty_database_has_nothing_to_check(app, db):
    assert undecryptable_column(db.session, db.metadata) is None
