"""WSGI entry point: `gunicorn --worker-class gthread wsgi:app`."""
from app import create_app
from app.logsetup import configure_logging

configure_logging()
app = create_app()
