"""app.migration_support: the CHECK-list switch the revisions share (run for real on SQLite
and PostgreSQL by tests/db; here only its refusal of anything but a plain identifier)."""
import pytest

from app.migration_support import _in_clause, switch_check_list


def test_the_clause_is_the_one_sqlalchemy_writes_for_an_enum_column():
    assert _in_clause("kind", ["a", "b_c"]) == "kind IN ('a', 'b_c')"


@pytest.mark.parametrize("table, column, name", [
    ("operations; DROP TABLE users", "kind", "operationkind"),
    ("operations", "kind\n", "operationkind"),
    ("operations", "kind", "Operation Kind"),
    ("", "kind", "operationkind"),
])
def test_only_plain_identifiers_reach_the_sql(table, column, name):
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        switch_check_list(table, column, name, ["a"], ["a", "b"])
