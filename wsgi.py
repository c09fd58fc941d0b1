"""WSGI entry point: `gunicorn --worker-class gthread wsgi:app`."""
import gc

from app import create_app
from app.logsetup import configure_logging

configure_logging()
app = create_app()
# Everything the process loaded to start (the app and its libraries, about 200,000 objects)
# stays for its lifetime: frozen, the garbage collector's full collections no longer walk
# it. Each such collection otherwise pauses every thread for about 80 ms, once every 20 to
# 40 environment pages (bench.dashboard, which measures the same way).
gc.collect()
gc.freeze()
