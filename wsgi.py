"""WSGI entry point: `gunicorn --worker-class gthread wsgi:app`."""
from app import create_app

app = create_app()
