"""Per-server columns of an operation page (PURE: plain values in, plain values out).

A parent whose children ran per server (a deploy's ``replica_deploy`` children, one per
server, side by side: app.operations.fanout) is shown with one column per server, so the
servers' logs read side by side. A child names its server in ``params["server_id"]``
(``OperationContext.run_child(server_id=...)``); a column holds that child and everything
below it, so each log line (which carries the id of the operation that wrote it) goes to
exactly one column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable


@dataclass(frozen=True)
class Node:
    """One operation of the tree: its id, its parent's id and the server it ran on."""

    id: int
    parent_id: int | None
    server_id: int | None = None


@dataclass
class Column:
    server_id: int
    child_ids: list[int] = field(default_factory=list)    # the per-server children
    op_ids: list[int] = field(default_factory=list)       # ...and all their descendants


@dataclass
class Group:
    """The per-server children of one parent operation, one column per server."""

    parent_id: int
    columns: list[Column] = field(default_factory=list)


def per_server_groups(nodes: Iterable[Node], min_servers: int = 2) -> list[Group]:
    """Group per-server children under their parent, one column per server.

    Only parents whose per-server children ran on at least ``min_servers`` servers get
    columns (one server reads fine in the ordinary log). Columns are ordered by server id
    (children started side by side get their ids in any order); groups by parent id.
    """
    nodes = sorted(nodes, key=lambda n: n.id)
    children: dict[int, list[int]] = {}
    for n in nodes:
        if n.parent_id is not None:
            children.setdefault(n.parent_id, []).append(n.id)

    def below(op_id: int) -> list[int]:
        out, todo = [], [op_id]
        while todo:
            current = todo.pop(0)
            out.append(current)
            todo.extend(children.get(current, []))
        return out

    groups: dict[int, dict[int, Column]] = {}
    for n in nodes:
        if n.parent_id is None or n.server_id is None:
            continue
        columns = groups.setdefault(n.parent_id, {})
        column = columns.setdefault(n.server_id, Column(n.server_id))
        column.child_ids.append(n.id)
        column.op_ids.extend(below(n.id))
    return [Group(parent_id, [columns[k] for k in sorted(columns)])
            for parent_id, columns in sorted(groups.items())
            if len(columns) >= min_servers]


def split_lines(lines: Iterable[tuple[int, str]], group: Group) -> dict[int, list[str]]:
    """The log lines ``(operation id, text)`` of each column of ``group``, by server id."""
    where = {op_id: column.server_id for column in group.columns for op_id in column.op_ids}
    out: dict[int, list[str]] = {column.server_id: [] for column in group.columns}
    for op_id, text in lines:
        server_id = where.get(op_id)
        if server_id is not None:
            out[server_id].append(text)
    return out
