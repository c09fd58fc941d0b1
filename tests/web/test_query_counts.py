"""The main pages issue a fixed number of SQL queries, whatever the row counts."""
from bench.dashboard import measure


def test_query_counts_do_not_grow_with_rows():
    small = measure(runs=1, scale=0.02)
    large = measure(runs=1, scale=0.1)
    for page in ("dashboard", "environment", "operations"):
        assert small[f"{page}_queries"] == large[f"{page}_queries"], (page, small, large)


def test_the_environment_page_stays_within_its_queries():
    """Issue 20.4: 16 queries (28 before): the onboarding checklist in one, the two-factor
    check in one, the page's many-to-one rows joined. Lower this when it drops."""
    assert measure(runs=1, scale=0.02)["environment_queries"] <= 16
