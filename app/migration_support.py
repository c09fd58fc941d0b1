"""What several schema migrations share (``migrations/versions/*``): one place, imported.

Alembic loads each revision file by its path, so one revision cannot import another; the
shared code lives here, in the application package that ``migrations/env.py`` runs with.
It imports no model: a migration must behave the same whatever the models become later,
so whatever it needs is passed in.
"""
from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def _in_clause(column: str, values) -> str:
    """The CHECK clause SQLAlchemy writes for an Enum column: ``kind IN ('a', 'b')``."""
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def switch_check_list(table: str, column: str, name: str, old, new) -> None:
    """Change the list of allowed values of ``table.column`` (its CHECK constraint ``name``)
    from ``old`` to ``new``: in place on SQLite, drop and create elsewhere."""
    for identifier in (table, column, name):
        if not _IDENTIFIER.fullmatch(identifier):
            raise ValueError(f"not a plain SQL identifier: {identifier!r}")
    if op.get_bind().dialect.name == "sqlite":
        _switch_sqlite(table, column, old, new)
    else:
        op.drop_constraint(name, table, type_="check")
        op.create_check_constraint(name, table, sa.column(column).in_(new))


def _switch_sqlite(table: str, column: str, old, new) -> None:
    """Rewrite the CHECK clause in the stored schema, in place.

    A batch copy of the table would DROP it, and with foreign keys on (Keystone turns them
    on for every SQLite connection, and PRAGMA foreign_keys cannot change inside the
    migration's transaction) that DROP deletes every row that refers to it by ON DELETE
    CASCADE (for ``operations``: every step, lock and child operation). Changing a CHECK's
    list does not change how rows are stored, which is the case SQLite documents for
    editing sqlite_master under writable_schema; every row is checked against the new list
    first, and schema_version is bumped so connections reload the schema.
    """
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).scalar()
    if _in_clause(column, old) not in sql:
        raise RuntimeError(f"{table}.{column} has an unexpected CHECK constraint; not changing it")
    outside = bind.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {column} NOT IN :v")
                           .bindparams(sa.bindparam("v", expanding=True)),
                           {"v": list(new)}).scalar()
    if outside:
        raise RuntimeError(f"{outside} row(s) of {table} have a {column} outside the new list")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar()
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    try:
        bind.execute(sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' "
                             "AND name = :name"),
                     {"sql": sql.replace(_in_clause(column, old), _in_clause(column, new)),
                      "name": table})
        bind.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema=OFF")
    assert bind.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
