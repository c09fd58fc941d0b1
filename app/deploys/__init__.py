"""Environment deploys (SPEC 3, 8, 15, 17, 18): the zero-downtime cutover of docs/cutover.md.

* :mod:`app.deploys.slots` -- the fixed blue/green slots of a web service per server (PURE).
* :mod:`app.deploys.planning` -- desired state + facts -> an ordered deploy plan (PURE).
* :mod:`app.deploys.commands` -- the shell command values the handler runs (PURE).
* :mod:`app.deploys.handlers` -- the ``environment_deploy`` operation handler and its children.
* ``image/`` -- files the managed Dockerfile copies into every Laravel image: the
  ``/.keystone/ready`` handler (router script for ``php -S``, a Caddyfile snippet for
  FrankenPHP), the entry wrapper and the scheduler loop.
"""
