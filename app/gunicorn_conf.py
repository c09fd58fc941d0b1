"""gunicorn settings Keystone controls (loaded by `keystone dev` with --config).

gunicorn writes its own ``Server: gunicorn`` line on every response; Keystone does
not advertise the software serving it, so the line says only ``keystone``.
"""
from gunicorn.http import wsgi as _wsgi

_wsgi.SERVER = "keystone"
