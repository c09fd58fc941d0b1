"""The main pages issue a fixed number of SQL queries, whatever the row counts."""
from bench.dashboard import measure


def test_query_counts_do_not_grow_with_rows():
    small = measure(runs=1, scale=0.02)
    large = measure(runs=1, scale=0.1)
    for page in ("dashboard", "environment", "operations"):
        assert small[f"{page}_queries"] == large[f"{page}_queries"], (page, small, large)
