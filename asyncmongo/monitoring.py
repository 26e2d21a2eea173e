"""Command monitoring: PyMongo's ``CommandListener`` objects, fed from libmongoc's APM callbacks.

The C core records each command's started/succeeded/failed events on the worker that ran it and hands
them, as plain tuples, to a ``_CommandPublisher`` on the loop thread before the operation's future
resolves. The publisher builds PyMongo's own event classes (``pymongo.monitoring``), so listeners
written for PyMongo work unchanged. Only command listeners are supported: server, heartbeat,
topology and pool listeners are refused (libmongoc 1.23's SDAM/CMAP events are not wired yet).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pymongo import monitoring
from pymongo.errors import ConfigurationError
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
    ConnectionPoolListener,
    ServerHeartbeatListener,
    ServerListener,
    TopologyListener,
)

_log = logging.getLogger("asyncmongo")

_UNSUPPORTED = (
    (ServerListener, "ServerListener"),
    (ServerHeartbeatListener, "ServerHeartbeatListener"),
    (TopologyListener, "TopologyListener"),
    (ConnectionPoolListener, "ConnectionPoolListener"),
)

# Tuple fields from the core (csrc/apm.c).
_STARTED, _SUCCEEDED, _FAILED = 0, 1, 2


def _unsupported_kinds(listener: Any) -> list[str]:
    return [name for cls, name in _UNSUPPORTED if isinstance(listener, cls)]


def command_listeners(listeners: Sequence[Any] | None) -> list[CommandListener]:
    """The command listeners a client publishes to: the globally registered ones
    (``pymongo.monitoring.register``), then ``listeners`` (already validated by PyMongo's rules).

    A listener of another kind in ``listeners`` raises ConfigurationError; a globally registered one
    is warned about (it may belong to another library using PyMongo), never silently dropped."""
    for listener in listeners or ():
        kinds = _unsupported_kinds(listener)
        if kinds:
            raise ConfigurationError(
                f"event_listeners: asyncmongo does not support {' or '.join(kinds)} objects yet "
                f"({listener!r}); only CommandListener is supported"
            )
    registered = monitoring._LISTENERS
    global_others = (
        registered.server_listeners
        + registered.server_heartbeat_listeners
        + registered.topology_listeners
        + registered.cmap_listeners
    )
    if global_others:
        warnings.warn(
            "asyncmongo ignores the globally registered server, heartbeat, topology and connection "
            f"pool listeners {global_others!r}: only command listeners are supported yet",
            UserWarning,
            stacklevel=4,
        )
    out = list(registered.command_listeners)
    out.extend(lst for lst in listeners or () if isinstance(lst, CommandListener))
    return out


class _CommandPublisher:
    """The core's ``apm_sink``: turns one job's event tuples into PyMongo events and calls the
    listeners. A listener that raises is logged (logger "asyncmongo") and does not affect the
    operation or the other listeners."""

    __slots__ = ("_listeners",)

    def __init__(self, listeners: Sequence[CommandListener]) -> None:
        self._listeners = tuple(listeners)

    def __call__(self, events: list[tuple]) -> None:
        # libmongoc's succeeded/failed events carry no database name: the started event with the
        # same request id (always in the same job's list) has it.
        databases: dict[int, str] = {}
        for (kind, command_name, database_name, address, request_id, operation_id, duration_us,
             server_connection_id, doc, error_message, _error_code) in events:
            server_conn = server_connection_id if server_connection_id >= 0 else None
            try:
                if kind == _STARTED:
                    databases[request_id] = database_name
                    event: Any = CommandStartedEvent(
                        doc, database_name, request_id, address, operation_id,
                        server_connection_id=server_conn,
                    )
                    method = "started"
                elif kind == _SUCCEEDED:
                    event = CommandSucceededEvent(
                        timedelta(microseconds=duration_us), doc, command_name, request_id, address,
                        operation_id, database_name=databases.get(request_id, database_name),
                        server_connection_id=server_conn,
                    )
                    method = "succeeded"
                else:
                    # The server's reply when there is one; a network error has none (PyMongo
                    # then publishes {"errmsg", "errtype"}; the exception type is not known here).
                    failure = doc if doc else {"errmsg": error_message}
                    event = CommandFailedEvent(
                        timedelta(microseconds=duration_us), failure, command_name, request_id,
                        address, operation_id, database_name=databases.get(request_id, database_name),
                        server_connection_id=server_conn,
                    )
                    method = "failed"
            except Exception:
                _log.exception("asyncmongo could not build a command event for %r", command_name)
                continue
            for listener in self._listeners:
                try:
                    getattr(listener, method)(event)
                except Exception:
                    _log.exception("command listener %r raised in %s()", listener, method)


__all__ = ["command_listeners"]
