"""One-off commands in a container of the environment's current build (issue 17, section 2).

* :mod:`.argv` (PURE): the one-click presets, typed text split with :func:`shlex.split`
  and validated into argv, and the reading of ``migrate:status`` output.
* :mod:`.service`: start a ``command_run`` operation (what the views and tests call).
* :mod:`.handlers`: the operation: ``docker compose run --rm`` of a one-off project
  rendered like a replica (same variables, same network), argv never a shell line,
  exit code recorded, the container removed on success, failure, timeout and cancel.
"""
