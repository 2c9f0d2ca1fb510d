"""The daemon's request table: each request type and its handler, from every feature module.

``handlers`` answers the core requests (peers, mail, admin) and holds the helpers every
handler shares; each feature keeps its requests beside its logic, in its own ``HANDLERS``
(files and claims in ``coordination``, tasks, decisions, proposals, the report, message
search and reactions in ``mailops``, the dashboard's owner actions in ``overseer``). Only
this module imports them all at import time (``handlers`` calls into ``coordination`` and
``mailops`` only from inside its functions), so any module can be imported first.
"""

from __future__ import annotations

from typing import Any

from . import coordination, decisions, handlers, mailops, overseer, proposals, report, tasks
from . import protocol as p
from .handlers import Handler

FEATURES = (coordination, mailops, tasks, decisions, proposals, report, overseer)

HANDLERS: dict[type[p.Request[Any]], Handler] = dict(handlers.HANDLERS)
for _feature in FEATURES:
    HANDLERS.update(_feature.HANDLERS)

READ_ONLY: frozenset[type[p.Request[Any]]] = frozenset({p.ListProposals, p.MakeReport})

SINGLE_STATEMENT: frozenset[Any] = (
    handlers.SINGLE_STATEMENT
    | coordination.SINGLE_STATEMENT
    | mailops.SINGLE_STATEMENT
    | tasks.SINGLE_STATEMENT
    | decisions.SINGLE_STATEMENT
    | READ_ONLY
)
"""Requests that write at most one SQL statement: the group commit runs them without a
savepoint of their own."""
