"""`python -m app.sandbox up|status|down` without the Flask app."""
from .cli import sandbox

sandbox(prog_name="python -m app.sandbox")
