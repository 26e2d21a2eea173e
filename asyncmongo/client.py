"""AsyncMongoClient: PyMongo's async client API over the C core.

The client owns one native core (asyncmongo._core.Client): libmongoc's pool, the worker threads and
one completion queue per event loop that uses it, so a client may serve several loops at once.
"""

from __future__ import annotations

import asyncio
import atexit
import warnings
import weakref
from typing import Any, Mapping

from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from pymongo.client_session import SessionOptions
from pymongo.driver_info import DriverInfo
from pymongo.errors import ConfigurationError, InvalidOperation
from pymongo.read_concern import ReadConcern
from pymongo.server_description import ServerDescription
from pymongo.server_type import SERVER_TYPE
from pymongo.topology_description import TOPOLOGY_TYPE, TopologyDescription
from pymongo.write_concern import WriteConcern

from asyncmongo import _core, _csot
from asyncmongo._client_bulk import client_bulk_write
from asyncmongo._common import encode as _encode
from asyncmongo._common import primary_read
from asyncmongo._execute import execute
from asyncmongo._options import ClientOptions
from asyncmongo._topology import (
    members,
    primary,
    server_description,
    topology_description,
    topology_settings,
)
from asyncmongo.change_stream import AsyncClusterChangeStream, open_change_stream
from asyncmongo.client_session import AsyncClientSession, check_session, run_in_session
from asyncmongo.command_cursor import AsyncCommandCursor, ready_batch
from asyncmongo.database import AsyncDatabase
from asyncmongo.monitoring import _CommandPublisher, _SdamPublisher

# Native cores still open, for the interpreter-exit hook.
_LIVE_CORES: "weakref.WeakSet[_core.Client]" = weakref.WeakSet()


class AsyncMongoClient:
    """An asyncio client for MongoDB, with PyMongo's ``AsyncMongoClient`` API.

    ``AsyncMongoClient(host=None, port=None, document_class=dict, tz_aware=False, connect=True,
    **kwargs)`` takes a MongoDB URI or host names and PyMongo's keyword options. One asyncmongo
    option is added: ``wakeup="eventfd"`` (default) or ``"threadsafe"``, the path by which worker
    threads wake the event loop (``ASYNCMONGO_WAKEUP`` in the environment sets the default).

    ``timeoutMS`` (URI or keyword, as PyMongo's) bounds each operation: queue wait, server
    selection, round trips and retries; ``with pymongo.timeout(seconds):`` bounds the operations
    inside it, as with PyMongo.
    """

    HOST = "localhost"
    PORT = 27017

    def __init__(
        self,
        host: Any = None,
        port: int | None = None,
        document_class: Any = None,
        tz_aware: bool | None = None,
        connect: bool | None = None,
        type_registry: Any = None,
        **kwargs: Any,
    ) -> None:
        self._core = None
        opts = ClientOptions(
            host, port, document_class, tz_aware, connect, type_registry, kwargs, self.HOST, self.PORT
        )
        self._opts = opts
        self._codec_options: CodecOptions = opts.codec_options
        self._read_preference = opts.read_preference
        self._write_concern: WriteConcern = opts.write_concern
        self._read_concern: ReadConcern = opts.read_concern
        self._timeout: float | None = opts.timeout
        # Command listeners: the core installs libmongoc's APM callbacks and hands each job's
        # events to the publisher on the loop thread, before the job's future resolves.
        sink = _CommandPublisher(opts.command_listeners) if opts.command_listeners else None
        # SDAM and heartbeat listeners: libmongoc's monitor threads report to the core, which
        # delivers on the loop of the client's latest operation (csrc/sdam.c).
        self._topology_settings = topology_settings(opts)
        lst = opts.listeners
        sdam_sink = (
            _SdamPublisher(lst, self._topology_settings)
            if lst.server or lst.heartbeat or lst.topology
            else None
        )
        self._core = _core.Client(
            opts.mongoc_uri, max_workers=opts.max_workers, wakeup=opts.wakeup, connect=opts.connect,
            apm_sink=sink, sdam_sink=sdam_sink,
        )
        _LIVE_CORES.add(self._core)
        _csot.register(self._core, _csot.CoreSettings(opts.retry_reads, opts.retry_writes,
                                                      opts.wait_queue_timeout))
        self._closed = False
        self._close_barrier: asyncio.Future[None] | None = None
        # Sessions not yet ended: close() ends them (each holds a libmongoc client of the pool).
        self._sessions: "weakref.WeakSet[AsyncClientSession]" = weakref.WeakSet()

    # ---- options ---------------------------------------------------------------------------

    @property
    def codec_options(self) -> CodecOptions:
        return self._codec_options

    @property
    def read_preference(self):
        return self._read_preference

    @property
    def write_concern(self) -> WriteConcern:
        return self._write_concern

    @property
    def read_concern(self) -> ReadConcern:
        return self._read_concern

    @property
    def options(self) -> ClientOptions:
        return self._opts

    # ---- the deployment, as libmongoc sees it ------------------------------------------------

    @property
    def topology_description(self) -> TopologyDescription:
        """libmongoc's latest description of the deployment, as PyMongo's TopologyDescription
        (the seeds, all Unknown, before the first). Immutable: read the property again for news."""
        return topology_description(self._core.topology(False), self._topology_settings)

    @property
    def nodes(self) -> frozenset[tuple[str, int]]:
        """The (host, port) of every server libmongoc knows now (empty before discovery)."""
        return frozenset(sd.address for sd in self.topology_description.known_servers)

    def _description(self) -> TopologyDescription:
        # The awaitable properties open the topology as PyMongo's do: discovery starts now.
        return topology_description(self._core.topology(True), self._topology_settings)

    async def _select_server(self) -> ServerDescription:
        """A writable server, selected by libmongoc on a worker (waiting for discovery up to
        serverSelectionTimeoutMS, else ServerSelectionTimeoutError), as PyMongo's server
        properties select one."""
        core = self._core
        future = core.submit(_core.OP_SELECT_SERVER, _core.RES_SERVER, "admin", None, b"", None,
                             None)
        return server_description(await execute(core, future))

    def _server_address(self, server_id: int) -> tuple[str, int] | None:
        """(host, port) of libmongoc's server `server_id` (a cursor's), else of the only seed."""
        facts = self._core.topology(False)
        for server in facts.servers if facts is not None else ():
            if server.server_id == server_id and server_id:
                return tuple(server.address)
        return self._opts.nodes[0] if len(self._opts.nodes) == 1 else None

    @property
    async def address(self) -> tuple[str, int] | None:
        """(host, port) of the current standalone, primary or mongos (awaitable, as PyMongo's:
        it waits for a writable server). InvalidOperation when load balancing among mongoses."""
        td = self._description()
        if td.topology_type == TOPOLOGY_TYPE.Sharded and len(td.server_descriptions()) > 1:
            raise InvalidOperation(
                'Cannot use "address" property when load balancing among mongoses, use "nodes" '
                "instead."
            )
        return (await self._select_server()).address

    @property
    async def primary(self) -> tuple[str, int] | None:
        """(host, port) of the replica set's primary, None if there is none known (or no replica
        set). It does not wait for discovery, as PyMongo's."""
        return primary(self._description())

    @property
    async def secondaries(self) -> set[tuple[str, int]]:
        """The replica set's secondaries libmongoc knows (empty for other deployments)."""
        return members(self._description(), SERVER_TYPE.RSSecondary)

    @property
    async def arbiters(self) -> set[tuple[str, int]]:
        """The replica set's arbiters libmongoc knows (empty for other deployments)."""
        return members(self._description(), SERVER_TYPE.RSArbiter)

    @property
    async def is_primary(self) -> bool:
        """True if the selected server accepts writes (a standalone, mongos or primary)."""
        return (await self._select_server()).is_writable

    @property
    async def is_mongos(self) -> bool:
        """True if connected to a mongos."""
        return (await self._select_server()).server_type == SERVER_TYPE.Mongos

    def eq_props(self) -> tuple[tuple[tuple[str, int], ...], str | None, str | None, str]:
        """What two clients compare by (PyMongo's): the seeds, replica set name, SRV host and
        SRV service name."""
        options = self._opts.options
        fqdn = None
        if self._opts.srv_uri:
            fqdn = self._opts.srv_uri.split("://", 1)[1].split("/", 1)[0].split("@")[-1]
        return (
            tuple(sorted(self._opts.nodes)),
            options.get("replicaset"),
            fqdn,
            options.get("srvservicename", "mongodb"),
        )

    def append_metadata(self, driver_info: DriverInfo) -> None:
        """Record a library's driver metadata (PyMongo's ``append_metadata``; Beanie calls it): it
        is checked as PyMongo checks it and kept in ``options.driver_info``. It does not reach the
        server: libmongoc 1.23 fixes the handshake metadata when the process's first client is
        made (mongoc_handshake_data_append must come before it), so new connections keep saying
        what they said (see README, "Moving from PyMongo Async")."""
        if not isinstance(driver_info, DriverInfo):
            raise TypeError(
                f"driver_info must be an instance of DriverInfo, not {type(driver_info)}"
            )
        self._opts.driver_info.append(driver_info)

    # ---- databases -------------------------------------------------------------------------

    def __getattr__(self, name: str) -> AsyncDatabase:
        if name.startswith("_"):
            raise AttributeError(
                f"AsyncMongoClient has no attribute {name!r}. To access the {name} database, use "
                f"client[{name!r}]."
            )
        return self.get_database(name)

    def __getitem__(self, name: str) -> AsyncDatabase:
        return self.get_database(name)

    def get_database(
        self,
        name: str | None = None,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
        timeout: float | None = None,
    ) -> AsyncDatabase:
        """The database ``name`` (the URI's by default). ``timeout`` (seconds, 0 for no limit;
        asyncmongo's, PyMongo 4.20 has none) overrides the client's timeoutMS for its
        operations."""
        if name is None:
            name = self._opts.database
            if name is None:
                raise ConfigurationError("No default database defined")
        return AsyncDatabase(self, name, codec_options, read_preference, write_concern, read_concern,
                             timeout)

    def get_default_database(
        self,
        default: str | None = None,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
        timeout: float | None = None,
    ) -> AsyncDatabase:
        """The database named in the URI, else ``default``."""
        name = self._opts.database or default
        if name is None:
            raise ConfigurationError("No default database name defined or provided.")
        return AsyncDatabase(self, name, codec_options, read_preference, write_concern, read_concern,
                             timeout)

    @_csot.apply
    async def server_info(self, session: Any = None) -> dict[str, Any]:
        """The server's ``buildInfo``."""
        return await self.admin.command("buildinfo", session=session)

    @_csot.apply
    async def list_databases(
        self, session: Any = None, comment: Any = None, **kwargs: Any
    ) -> AsyncCommandCursor:
        """A command cursor over the ``databases`` of the listDatabases reply (the server sends
        them in one reply: the cursor is already exhausted on the server, as PyMongo's)."""
        session = check_session(self, session)
        cmd: dict[str, Any] = {"listDatabases": 1}
        cmd.update(kwargs)
        if comment is not None:
            cmd["comment"] = comment
        op, prefs = primary_read(self)
        reply = await run_in_session(
            self._core, session, op, _core.RES_DOC, "admin", None, _encode(cmd), None,
            DEFAULT_CODEC_OPTIONS, 0, 0, prefs,
        )
        return AsyncCommandCursor(self, "admin", ready_batch(reply["databases"], "admin.$cmd"),
                                  DEFAULT_CODEC_OPTIONS, comment=comment)

    @_csot.apply
    async def list_database_names(self, session: Any = None, comment: Any = None) -> list[str]:
        cursor = await self.list_databases(session, comment, nameOnly=True)
        return [doc["name"] async for doc in cursor]

    @_csot.apply
    async def drop_database(
        self, name_or_database: Any, session: Any = None, comment: Any = None
    ) -> None:
        """Drop a database (by name or object), with the client's write concern."""
        session = check_session(self, session)
        name = name_or_database
        if isinstance(name, AsyncDatabase):
            name = name.name
        if not isinstance(name, str):
            raise TypeError(
                f"name_or_database must be an instance of str or a AsyncDatabase, not {type(name)}"
            )
        cmd: dict[str, Any] = {"dropDatabase": 1}
        if comment is not None:
            cmd["comment"] = comment
        # The client's write concern: libmongoc applies it to a write command with no options.
        await self[name]._write_command(cmd, None, DEFAULT_CODEC_OPTIONS, session=session)

    @_csot.apply
    async def watch(
        self,
        pipeline: list[Mapping[str, Any]] | None = None,
        full_document: str | None = None,
        resume_after: Mapping[str, Any] | None = None,
        max_await_time_ms: int | None = None,
        batch_size: int | None = None,
        collation: Any = None,
        start_at_operation_time: Any = None,
        session: Any = None,
        start_after: Mapping[str, Any] | None = None,
        comment: Any = None,
        full_document_before_change: str | None = None,
        show_expanded_events: bool | None = None,
    ) -> Any:
        """A change stream on every database of the deployment (``AsyncClusterChangeStream``),
        already open: ``async with await client.watch() as stream: async for change in stream: ...``.
        Arguments as PyMongo's ``watch``."""
        return await open_change_stream(
            AsyncClusterChangeStream, self, pipeline, full_document, resume_after,
            max_await_time_ms, batch_size, collation, start_at_operation_time, session, start_after,
            comment, full_document_before_change, show_expanded_events,
        )

    # ---- sessions --------------------------------------------------------------------------

    def start_session(
        self,
        causal_consistency: bool | None = None,
        default_transaction_options: Any = None,
        snapshot: bool | None = False,
        default_timeout: float | None = None,
    ) -> AsyncClientSession:
        """A new explicit session (PyMongo's ``start_session``): ``async with
        client.start_session() as session:``. Causally consistent unless ``snapshot``. It takes a
        libmongoc client of the pool from its first operation until it ends.
        ``default_timeout`` (seconds, 0 for no limit; the specification's defaultTimeoutMS,
        asyncmongo's own) overrides the client's timeoutMS for commit_transaction,
        abort_transaction, with_transaction and end_session."""
        if self._closed:
            raise InvalidOperation("Cannot use MongoClient after close")
        options = SessionOptions(causal_consistency, default_transaction_options, snapshot)
        session = AsyncClientSession(self, options, default_timeout)
        self._sessions.add(session)
        return session

    # ---- client-level bulk write -----------------------------------------------------------

    @_csot.apply
    async def bulk_write(
        self,
        models: Any,
        session: Any = None,
        ordered: bool = True,
        verbose_results: bool = False,
        bypass_document_validation: bool | None = None,
        comment: Any = None,
        let: Mapping[str, Any] | None = None,
        write_concern: WriteConcern | None = None,
    ) -> Any:
        """Write to several collections in one bulk (the ``bulkWrite`` command, MongoDB 8.0+), as
        PyMongo's ``AsyncMongoClient.bulk_write``: ``models`` are PyMongo's ``InsertOne``,
        ``UpdateOne``... each with ``namespace="db.coll"``. Returns a ClientBulkWriteResult; raises
        ClientBulkWriteException with the partial result, write errors and write concern errors."""
        return await client_bulk_write(
            self, models, session, ordered, verbose_results, bypass_document_validation, comment,
            let, write_concern,
        )

    # ---- lifecycle -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the client (PyMongo's alias of close(), for contextlib.aclosing)."""
        await self.close()

    async def aconnect(self) -> None:
        """Wait until a server is selectable (PyMongo's ``aconnect``)."""
        await self.admin.command("ping")

    async def close(self) -> None:
        """Stop taking operations; fail the queued ones with InvalidOperation; let the running ones
        finish; release the connections and threads. Safe to call more than once, and a cancelled
        close still finishes closing in the background."""
        core = self._core
        if core is None:
            return
        if not self._closed:
            sessions = [s for s in self._sessions if not s.has_ended]
            if sessions and not core.closed:
                # An open transaction is aborted; each session's client goes back to the pool.
                await asyncio.gather(*(s.end_session() for s in sessions), return_exceptions=True)
        if not self._closed:
            self._closed = True
            barrier = core.close()
            if barrier is None:  # nothing running: closed already
                self._finish_close()
                return
            self._close_barrier = barrier
            # Released when the last worker has gone, whether or not anybody still awaits close().
            barrier.add_done_callback(self._finish_close)
        barrier = self._close_barrier
        if barrier is not None and not barrier.done() and barrier.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(barrier)

    def _close_now(self) -> None:
        """close() without waiting (Motor's synchronous close): no operation is taken from now
        on, the queued ones fail with InvalidOperation, the running ones finish in the background
        and the threads go after them. Sessions still open end when collected (libmongoc aborts
        their transactions)."""
        core = self._core
        if core is None or self._closed:
            return
        self._closed = True
        core.close(False)  # no barrier: nothing may be left for a loop that could close first
        self._finish_close()

    def _finish_close(self, _barrier: Any = None) -> None:
        core = self._core
        core.destroy()
        _LIVE_CORES.discard(core)

    async def __aenter__(self) -> "AsyncMongoClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __del__(self, _exiting: Any = _core.exiting) -> None:
        # Nothing at interpreter exit: warnings and loops may be half torn down by then (the
        # default argument keeps the check reachable when module globals are cleared).
        if _exiting():
            return
        core = getattr(self, "_core", None)
        if core is not None and not self._closed and not core.closed:
            warnings.warn(
                f"Unclosed AsyncMongoClient {self!r}: call 'await client.close()'",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, self.__class__):
            return self.eq_props() == other.eq_props()
        return NotImplemented

    def __ne__(self, other: Any) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self.eq_props())

    def __repr__(self) -> str:
        hosts = [f"{h}:{p}" for h, p in self._opts.nodes] if hasattr(self, "_opts") else []
        return f"AsyncMongoClient(host={hosts!r})"

    # ---- live statistics ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """What the client is doing now, from counters the core keeps anyway (cheap enough to call
        every second, e.g. from a metrics exporter: see examples/prometheus_stats.py):

        - ``submitted``, ``completed``, ``failed``, ``cancelled``: operations (core jobs: a cursor's
          each batch is one) submitted, and how each ended: with a result, with an exception, or
          cancelled (taken out unsent, its result dropped, or its event loop closed first). Once
          the client is idle, ``completed + failed + cancelled == submitted``.
        - ``queued``: waiting for a worker thread; ``running``: on a worker now.
        - ``workers``, ``workers_busy``, ``max_workers``: native worker threads alive, not idle
          (running a job, or handing its result back and about to look for the next), and the limit
          (maxPoolSize).
        - ``sessions``: sessions holding a libmongoc client (explicit ones and open cursors').
        - ``loops``: one dict per event loop using the client: ``wakeup`` ("eventfd" or
          "threadsafe"), ``in_flight`` (jobs that will complete on it), ``completions``,
          ``wakeups``, ``drains``; and their sums ``wakeups`` and ``drains``: completions per
          drain above 1 show several completions handled per wake-up of the loop.
        """
        return self._core.stats()

    # ---- internals -------------------------------------------------------------------------

    # Not iterable (PyMongo's PYTHON-3084): without this, iter() would try __getitem__ and make
    # databases named 0, 1, ...
    __iter__ = None

    def __next__(self):
        raise TypeError("'AsyncMongoClient' object is not iterable")

    next = __next__


@atexit.register
def _at_exit() -> None:
    # Workers still running operations must not take the GIL of a finalizing interpreter.
    for core in list(_LIVE_CORES):
        core.abandon()
    _core._set_finalizing()


__all__ = ["AsyncMongoClient", "DEFAULT_CODEC_OPTIONS", "InvalidOperation"]
