"""Monitoring: PyMongo's listener objects, fed from libmongoc's APM callbacks.

Command events: the C core records each command's started/succeeded/failed events on the worker that
ran it and hands them, as plain tuples, to a ``_CommandPublisher`` on the loop thread before the
operation's future resolves.

SDAM and heartbeat events (ServerListener, TopologyListener, ServerHeartbeatListener): libmongoc's
monitor threads report them to the core, which records them GIL-free and delivers them in order, on
the loop thread of the client's latest operation, to an ``_SdamPublisher`` (csrc/sdam.c).

Both build PyMongo's own event classes (``pymongo.monitoring``), so listeners written for PyMongo
work unchanged. ConnectionPoolListener objects are accepted and receive nothing: libmongoc 1.23 has
no connection pool (CMAP) events to report, and asyncmongo does not invent them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NamedTuple

from pymongo import monitoring
from pymongo.hello import Hello
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
    ConnectionPoolListener,
    ServerClosedEvent,
    ServerDescriptionChangedEvent,
    ServerHeartbeatFailedEvent,
    ServerHeartbeatListener,
    ServerHeartbeatStartedEvent,
    ServerHeartbeatSucceededEvent,
    ServerListener,
    ServerOpeningEvent,
    TopologyClosedEvent,
    TopologyDescriptionChangedEvent,
    TopologyListener,
    TopologyOpenedEvent,
)

from asyncmongo import _core
from asyncmongo._topology import server_description, topology_description

_log = logging.getLogger("asyncmongo")

# Tuple fields from the core (csrc/apm.c).
_STARTED, _SUCCEEDED, _FAILED = 0, 1, 2


class Listeners(NamedTuple):
    """A client's listeners by kind: the globally registered ones first, then its own."""

    command: list[CommandListener]
    server: list[ServerListener]
    heartbeat: list[ServerHeartbeatListener]
    topology: list[TopologyListener]
    pool: list[ConnectionPoolListener]

    @property
    def all(self) -> list[Any]:
        out: list[Any] = []
        for group in self:
            out.extend(lst for lst in group if lst not in out)
        return out


def listeners(own: Sequence[Any] | None) -> Listeners:
    """The listeners a client publishes to: ``pymongo.monitoring.register``'s, then ``own``
    (already validated by PyMongo's rules). A pool listener gets a warning: it will hear nothing."""
    registered = monitoring._LISTENERS
    own = list(own or ())
    out = Listeners(
        list(registered.command_listeners) + [x for x in own if isinstance(x, CommandListener)],
        list(registered.server_listeners) + [x for x in own if isinstance(x, ServerListener)],
        list(registered.server_heartbeat_listeners)
        + [x for x in own if isinstance(x, ServerHeartbeatListener)],
        list(registered.topology_listeners) + [x for x in own if isinstance(x, TopologyListener)],
        list(registered.cmap_listeners) + [x for x in own if isinstance(x, ConnectionPoolListener)],
    )
    if out.pool:
        warnings.warn(
            f"asyncmongo cannot report connection pool events: libmongoc {_core.MONGOC_VERSION} "
            f"has no connection pool monitoring, so {out.pool!r} will receive no events",
            UserWarning,
            stacklevel=4,
        )
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


def _call(listener: Any, method: str, event: Any) -> None:
    try:
        getattr(listener, method)(event)
    except Exception:
        _log.exception("%s listener %r raised in %s()", type(event).__name__, listener, method)


class _SdamPublisher:
    """The core's ``sdam_sink``: turns SdamEvent records (csrc/sdam.c) into PyMongo's SDAM and
    heartbeat events and calls the listeners, in the order libmongoc reported them. Called on the
    loop thread of the client's latest operation. A listener that raises is logged (logger
    "asyncmongo") and does not affect the others."""

    __slots__ = ("_server", "_heartbeat", "_topology", "_settings")

    def __init__(self, lst: Listeners, settings: Any) -> None:
        self._server = tuple(lst.server)
        self._heartbeat = tuple(lst.heartbeat)
        self._topology = tuple(lst.topology)
        self._settings = settings

    def __call__(self, events: list[Any], dropped: int) -> None:
        if dropped:
            _log.warning("asyncmongo dropped %d SDAM events: no event loop used the client to "
                         "receive them", dropped)
        for ev in events:
            try:
                self._publish(ev)
            except Exception:
                _log.exception("asyncmongo could not publish the SDAM event %r", ev)

    def _publish(self, ev: Any) -> None:
        kind = ev.kind
        address = tuple(ev.address) if ev.address is not None else None
        if ev.topology_id is not None:
            # One topology id throughout, libmongoc's (TopologyDescription reads it here).
            self._settings._topology_id = ev.topology_id
        if kind == _core.SDAM_HEARTBEAT_STARTED:
            event: Any = ServerHeartbeatStartedEvent(address, ev.awaited)
            targets, method = self._heartbeat, "started"
        elif kind == _core.SDAM_HEARTBEAT_SUCCEEDED:
            event = ServerHeartbeatSucceededEvent(ev.duration_us / 1e6, Hello(ev.reply), address,
                                                  ev.awaited)
            targets, method = self._heartbeat, "succeeded"
        elif kind == _core.SDAM_HEARTBEAT_FAILED:
            event = ServerHeartbeatFailedEvent(ev.duration_us / 1e6, ev.error, address, ev.awaited)
            targets, method = self._heartbeat, "failed"
        elif kind == _core.SDAM_SERVER_OPENING:
            event, targets, method = ServerOpeningEvent(address, ev.topology_id), self._server, "opened"
        elif kind == _core.SDAM_SERVER_CLOSED:
            event, targets, method = ServerClosedEvent(address, ev.topology_id), self._server, "closed"
        elif kind == _core.SDAM_SERVER_CHANGED:
            event = ServerDescriptionChangedEvent(
                server_description(ev.previous), server_description(ev.new), address,
                ev.topology_id,
            )
            targets, method = self._server, "description_changed"
        elif kind == _core.SDAM_TOPOLOGY_OPENING:
            event, targets, method = TopologyOpenedEvent(ev.topology_id), self._topology, "opened"
        elif kind == _core.SDAM_TOPOLOGY_CLOSED:
            event, targets, method = TopologyClosedEvent(ev.topology_id), self._topology, "closed"
        elif kind == _core.SDAM_TOPOLOGY_CHANGED:
            event = TopologyDescriptionChangedEvent(
                topology_description(ev.previous, self._settings),
                topology_description(ev.new, self._settings), ev.topology_id,
            )
            targets, method = self._topology, "description_changed"
        else:
            return
        for listener in targets:
            _call(listener, method, event)


__all__ = ["Listeners", "listeners"]
