"""The operations engine: every state change in Keystone is an audited operation.

    op = start_operation(kind, target_type=..., target_id=..., organisation_id=...,
                         lock_keys=["environment:4"], on_conflict="queue")

    @operation_handler(OperationKind.SERVICE_DEPLOY)
    def deploy(ctx: OperationContext) -> None:
        with ctx.step("Pull image", server=server) as step:
            step.run(cmd("docker", "pull", image))

See docs/contracts.md for the full contract.
"""
from app.operations.context import OperationContext
from app.operations.runtime import LogRecorder, Runtime
from app.operations.step import StepHandle
from app.operations.errors import (ChildFailed, OperationCancelled, OperationError,
                                   OperationLocked, OperationTimedOut, StepFailed)
from app.operations.lifecycle import (cancel_operation, conflict_message, dispatch_queued,
                                      enqueue_operation, finish, lock_holders,
                                      start_operation)
from app.operations.logstream import stream_key
from app.operations.reaper import reap
from app.operations.registry import (TIMEOUTS, handler_for, load_handlers, operation_handler,
                                     timeout_for)
from app.operations.state import can_transition, check_transition

__all__ = [
    "start_operation", "cancel_operation", "dispatch_queued", "enqueue_operation", "finish",
    "lock_holders", "conflict_message", "operation_handler", "handler_for", "load_handlers",
    "timeout_for", "TIMEOUTS", "OperationContext", "StepHandle", "Runtime", "LogRecorder",
    "OperationError", "OperationLocked", "StepFailed", "OperationCancelled", "OperationTimedOut",
    "ChildFailed", "reap", "stream_key", "can_transition", "check_transition",
]
