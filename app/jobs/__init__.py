"""RQ entry points. Jobs take ids, never objects or secrets."""
