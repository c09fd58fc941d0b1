"""Handlers the operations integration tests and the benchmark run in a real worker.

Loaded by the worker through KEYSTONE_HANDLER_MODULES=tests.integration.ops_handlers.
The commands are fixed test scripts; values come from params (ints) or, for the
secret, from an encrypted column read inside the worker.
"""
from __future__ import annotations

from app.extensions import db
from app.models import Server
from app.models.enums import OperationKind
from app.operations import operation_handler
from app.shell import Secret, cmd

SCRIPTS = {
    # n lines, `delay` seconds apart, each with its index and the server's clock in ns
    "lines": "i=1; while [ $i -le \"$1\" ]; do echo \"line $i $(date +%s%N)\"; "
             "i=$((i+1)); sleep \"$2\"; done",
    "sleep": "echo started; exec sleep \"$1\"",
    "echo_secret": "echo \"the secret is $1\"; echo \"$1\" | rev | rev",
    # a failing command: progress on stdout, the reason on stderr
    "fail_stderr": "echo \"migrating $1\"; echo \"SQLSTATE: table $1 exists\" >&2; "
                   "echo done-ish; exit 4",
}


@operation_handler(OperationKind.CONFIG_CHANGE)
def scripted(ctx) -> None:
    """params: server_id, steps: [{name, script, args}], secret: bool."""
    server = db.session.get(Server, int(ctx.params["server_id"]))
    for spec in ctx.params.get("steps", []):
        args = [str(a) for a in spec.get("args", [])]
        if spec.get("secret"):
            args = [Secret(server.bootstrap_password, "sentinel")]
        with ctx.step(spec["name"], server=server) as step:
            step.run(cmd("sh", "-c", SCRIPTS[spec["script"]], "sh", *args),
                     timeout=spec.get("timeout"))
