"""Encryption at rest: one column type for every secret field.

Values are encrypted with MultiFernet over KEYSTONE_ENCRYPTION_KEYS (newest
first): the newest key encrypts, every key decrypts, and `keystone rotate-keys`
re-encrypts each stored token under the newest key.
"""
from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.types import TypeDecorator


class KeyRing:
    """Holds the MultiFernet built from the configured keys."""

    def __init__(self) -> None:
        self._fernet: MultiFernet | None = None

    def configure(self, keys: list[str]) -> None:
        if not keys:
            raise RuntimeError("KEYSTONE_ENCRYPTION_KEYS is empty: refusing to store secrets")
        self._fernet = MultiFernet([Fernet(k.encode() if isinstance(k, str) else k) for k in keys])

    @property
    def fernet(self) -> MultiFernet:
        if self._fernet is None:
            raise RuntimeError("encryption keys are not configured (create_app not called)")
        return self._fernet

    def encrypt(self, plaintext: str) -> str:
        return self.fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self.fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:  # a key was removed before rotating
            raise RuntimeError("a stored secret cannot be decrypted with the configured "
                               "KEYSTONE_ENCRYPTION_KEYS (was a key removed before "
                               "`keystone rotate-keys`?)") from exc

    def rotate(self, token: str) -> str:
        return self.fernet.rotate(token.encode("ascii")).decode("ascii")


keyring = KeyRing()


class EncryptedText(TypeDecorator):
    """A string stored as a Fernet token."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect) -> str | None:
        if value is None:
            return None
        return keyring.encrypt(str(value))

    def process_result_value(self, value: Any, dialect) -> str | None:
        if value is None:
            return None
        return keyring.decrypt(value)


class EncryptedJSON(TypeDecorator):
    """A JSON document stored as a Fernet token."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect) -> str | None:
        if value is None:
            return None
        return keyring.encrypt(json.dumps(value, sort_keys=True))

    def process_result_value(self, value: Any, dialect) -> Any:
        if value is None:
            return None
        return json.loads(keyring.decrypt(value))


ENCRYPTED_TYPES = (EncryptedText, EncryptedJSON)


def encrypted_columns(metadata: sa.MetaData):
    """Yield (table, column) for every encrypted column in the schema."""
    for table in metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, ENCRYPTED_TYPES):
                yield table, column


def rotate_all(session, metadata: sa.MetaData) -> int:
    """Re-encrypt every stored secret under the newest key; return the count."""
    count = 0
    for table, column in encrypted_columns(metadata):
        pk = list(table.primary_key.columns)[0]
        raw = sa.type_coerce(column, sa.Text)
        rows = session.execute(sa.select(pk, raw.label("token")).where(column.isnot(None))).all()
        for row_id, token in rows:
            new = keyring.rotate(token)
            session.execute(sa.update(table).where(pk == row_id)
                            .values({column.name: sa.type_coerce(new, sa.Text)}))
            count += 1
    session.commit()
    return count


def undecryptable_column(session, metadata: sa.MetaData) -> str | None:
    """``table.column`` of a stored secret the configured keys cannot decrypt, else None.

    One value per encrypted column is read (LIMIT 1). A process that shares the database
    with others (a worker on another machine) runs this at start-up: without the same
    KEYSTONE_ENCRYPTION_KEYS it would generate a fresh key of its own and fail every
    operation that needs a secret, half-way through. A schema not migrated yet has nothing
    to check.
    """
    for table, column in encrypted_columns(metadata):
        raw = sa.type_coerce(column, sa.Text)
        try:
            token = session.execute(sa.select(raw).where(column.isnot(None)).limit(1)).scalar()
        except sa.exc.DBAPIError:
            session.rollback()
            return None
        if token is None:
            continue
        try:
            keyring.fernet.decrypt(token.encode("ascii"))
        except InvalidToken:
            return f"{table.name}.{column.name}"
    return None
