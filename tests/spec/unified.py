"""A runner for MongoDB's Unified Test Format, as much of it as the CRUD and the Client Side
Operations Timeout tests use.

It drives any client with PyMongo's async API: asyncmongo (the driver under test) and, as the
witness, PyMongo's own AsyncMongoClient, so a failure can be told apart: the same answer from both
clients is the server's, a different one is ours. Setup and the outcome check go through an internal PyMongo
MongoClient, never through the driver under test. A failure is a SpecFailure carrying the server's
answer when it came from a server reply; the runner never turns a failure into a pass.
"""

from __future__ import annotations

import asyncio
import binascii
import copy
import inspect
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bson import json_util
from bson.codec_options import CodecOptions
from bson.json_util import JSONOptions
from bson.son import SON
import pymongo
import pymongo.asynchronous.collection
import pymongo.asynchronous.database
from pymongo import (
    CursorType,
    DeleteMany,
    DeleteOne,
    InsertOne,
    ReplaceOne,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
    uri_parser,
)
from pymongo.client_session import TransactionOptions
from pymongo.errors import (
    BulkWriteError,
    ClientBulkWriteException,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
)
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import make_read_preference, read_pref_mode_from_name
from pymongo.results import (
    BulkWriteResult,
    ClientBulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)
from pymongo.write_concern import WriteConcern

from tests.spec.matching import Matcher, Mismatch, assert_same_documents

# The newest format version this runner reads (files of a newer minor version are refused).
SCHEMA_VERSION = (1, 26)

_JSON_OPTIONS = JSONOptions(document_class=dict, tz_aware=False)
# Commands whose events are never observed (the command monitoring spec's sensitive commands).
_SENSITIVE = {
    "authenticate", "saslstart", "saslcontinue", "getnonce", "createuser", "updateuser",
    "copydbgetnonce", "copydbsaslstart", "copydb",
}
_EVENT_TYPES = {
    "commandStartedEvent": CommandStartedEvent,
    "commandSucceededEvent": CommandSucceededEvent,
    "commandFailedEvent": CommandFailedEvent,
}
# Connection pool (CMAP) events a client may be asked to observe. asyncmongo publishes none
# (libmongoc 1.23 has no connection pool events), so none is ever recorded: a test that expects
# one fails; one that expects none (``events: []``) passes only as far as the driver can say (see
# _check_events).
_CMAP_EVENTS = {
    "poolCreatedEvent", "poolReadyEvent", "poolClearedEvent", "poolClosedEvent",
    "connectionCreatedEvent", "connectionReadyEvent", "connectionClosedEvent",
    "connectionCheckOutStartedEvent", "connectionCheckOutFailedEvent",
    "connectionCheckedOutEvent", "connectionCheckedInEvent",
}
_CURSOR_TYPES = {"tailable": CursorType.TAILABLE, "tailableAwait": CursorType.TAILABLE_AWAIT,
                 "nonTailable": CursorType.NON_TAILABLE}
_TIMEOUT_MODES = {"cursorLifetime": "cursor_lifetime", "iteration": "iteration"}
# Server answers meaning "this server does not have that": CommandNotFound, CommandNotSupported,
# NotImplemented, and IDLUnknownField (an option the server does not know).
LACKS_FEATURE_CODES = {59, 115, 238, 40415}


# ---- failures and skips -----------------------------------------------------------------------


class SpecFailure(AssertionError):
    """The test failed at ``where``. ``answer`` is what the server answered when the failure comes
    from a server reply (an error, a result, a reply, collection contents), None when it is the
    client's doing (a command it sent, a client-side error, the runner)."""

    def __init__(self, where: str, message: str, answer: str | None = None,
                 code: int | None = None) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message
        self.answer = answer
        self.code = code

    @property
    def signature(self) -> tuple[str, str] | None:
        return None if self.answer is None else (self.where, self.answer)


class SpecSkip(Exception):
    """The test cannot run here; the message says why (a requirement, the server's answer)."""


class RunnerError(Exception):
    """The test uses something this runner does not implement, or is malformed."""


# ---- loading -------------------------------------------------------------------------------


@dataclass
class Case:
    """One test of a file."""

    path: Path
    spec: dict[str, Any]  # the whole file
    test: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.path.stem}: {self.test['description']}"


def spec_folder(repo_root: Path, name: str = "crud-unified",
                env_var: str = "ASYNCMONGO_SPEC_DIR") -> tuple[Path | None, str]:
    """The folder of JSON files (``env_var``, else ../shared/data/<name> from the repository
    root), or None with the reason."""
    default = (repo_root / ".." / "shared" / "data" / name).resolve()
    env = os.environ.get(env_var)
    candidates = [Path(env)] if env else []
    candidates.append(default)
    for folder in candidates:
        if folder.is_dir():
            return folder, ""
    tried = " nor ".join(str(c) for c in candidates)
    return None, f"no unified test files: neither {tried} exists (set {env_var})"


def load_cases(folder: Path) -> list[Case]:
    cases = []
    for path in sorted(folder.glob("*.json")):
        spec = json_util.loads(path.read_text(), json_options=_JSON_OPTIONS)
        for test in spec.get("tests", ()):
            cases.append(Case(path, spec, test))
    return cases


def _version(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split("-")[0].split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def check_schema_version(spec: Mapping[str, Any]) -> None:
    version = _version(spec["schemaVersion"])
    if version[0] != SCHEMA_VERSION[0] or version[:2] > SCHEMA_VERSION:
        raise RunnerError(
            f"schemaVersion {spec['schemaVersion']} is not supported (runner supports up to "
            f"{SCHEMA_VERSION[0]}.{SCHEMA_VERSION[1]})"
        )


# ---- the server ----------------------------------------------------------------------------


class ServerFacts:
    """What runOnRequirements are checked against, asked of the server once (buildInfo, hello)."""

    def __init__(self, internal: Any, uri: str) -> None:
        self.internal = internal
        build = internal.admin.command("buildInfo")
        self.version: tuple[int, ...] = tuple(build["versionArray"][:3])
        hello = internal.admin.command("hello")
        if hello.get("msg") == "isdbgrid":
            self.topology = "sharded"
        elif hello.get("serviceId") is not None:
            self.topology = "load-balanced"
        elif hello.get("setName"):
            self.topology = "replicaset"
        else:
            self.topology = "single"
        # Atlas Serverless cannot be recognised from the server's replies (the format says so):
        # the environment tells.
        self.serverless = os.environ.get("ASYNCMONGO_SERVERLESS") == "1"
        self.auth = uri_parser.parse_uri(uri)["username"] is not None
        self._params: dict[str, Any] | None = None

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def _parameters(self) -> dict[str, Any]:
        if self._params is None:
            try:
                self._params = dict(self.internal.admin.command("getParameter", "*"))
            except OperationFailure:
                self._params = {}
        return self._params

    def _unmet(self, req: Mapping[str, Any]) -> str | None:
        """Why one runOnRequirement is not met, or None when it is."""
        if "minServerVersion" in req and self.version < _version(req["minServerVersion"]):
            return f"server {self.version_text} < minServerVersion {req['minServerVersion']}"
        if "maxServerVersion" in req and self.version > _version(req["maxServerVersion"]):
            return f"server {self.version_text} > maxServerVersion {req['maxServerVersion']}"
        topologies = req.get("topologies")
        if topologies:
            ok = self.topology in topologies or (
                self.topology == "sharded" and "sharded-replicaset" in topologies
            )
            if not ok:
                return f"topology {self.topology} not in {topologies}"
        serverless = req.get("serverless", "allow")
        if serverless == "require" and not self.serverless:
            return "serverless required (not Atlas Serverless)"
        if serverless == "forbid" and self.serverless:
            return "serverless forbidden"
        if "auth" in req and bool(req["auth"]) != self.auth:
            return f"auth {'required' if req['auth'] else 'forbidden'}"
        if req.get("csfle"):
            return "csfle required (asyncmongo has no client-side encryption)"
        for name, value in (req.get("serverParameters") or {}).items():
            params = self._parameters()
            if name not in params:
                return f"server parameter {name} unknown to the server"
            try:
                Matcher().match(value, params[name], name, root=False)
            except Mismatch:
                return f"server parameter {name}={params[name]!r}, needs {value!r}"
        return None

    def unmet(self, requirements: list[Mapping[str, Any]] | None) -> str | None:
        """None if any requirement is met (or there are none), else the reasons."""
        if not requirements:
            return None
        reasons = []
        for req in requirements:
            why = self._unmet(req)
            if why is None:
                return None
            reasons.append(why)
        return "runOnRequirements not met: " + "; ".join(reasons)


# ---- command events ------------------------------------------------------------------------


class EventRecorder(CommandListener):
    """All command events of one client, in order (filtering happens when they are compared);
    none while ``paused`` (the runner's own commands, awaitMinPoolSizeMS)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.paused = False

    def started(self, event: CommandStartedEvent) -> None:
        if not self.paused:
            self.events.append(event)

    def succeeded(self, event: CommandSucceededEvent) -> None:
        if not self.paused:
            self.events.append(event)

    def failed(self, event: CommandFailedEvent) -> None:
        if not self.paused:
            self.events.append(event)


@dataclass
class ClientEntity:
    client: Any
    recorder: EventRecorder
    observe: set[str]
    ignore: set[str]
    observe_sensitive: bool
    warm_up: bool = False
    max_pool_size: Any = None

    def observed(self) -> list[Any]:
        kinds = tuple(_EVENT_TYPES[name] for name in self.observe if name in _EVENT_TYPES)
        out = []
        for event in self.recorder.events:
            if not isinstance(event, kinds):
                continue
            name = event.command_name.lower()
            if name in self.ignore or name == "configurefailpoint":
                continue
            if not self.observe_sensitive and (
                name in _SENSITIVE
                or (name in ("hello", "ismaster") and isinstance(event, CommandStartedEvent)
                    and not event.command)
            ):
                continue
            out.append(event)
        return out


# ---- driver results as the format's documents ----------------------------------------------


def _update_result(result: UpdateResult, client_bulk: bool = False) -> dict[str, Any]:
    if not result.acknowledged:
        return {"acknowledged": False}
    doc: dict[str, Any] = {"matchedCount": result.matched_count,
                           "modifiedCount": result.modified_count}
    if not client_bulk:
        doc["upsertedCount"] = 1 if result.upserted_id is not None else 0
    if result.upserted_id is not None:
        doc["upsertedId"] = result.upserted_id
    return doc


def result_document(result: Any) -> Any:
    """A driver's return value in the format's shape (CRUD spec result models)."""
    if isinstance(result, InsertOneResult):
        if not result.acknowledged:
            return {"acknowledged": False}
        return {"insertedId": result.inserted_id}
    if isinstance(result, InsertManyResult):
        if not result.acknowledged:
            return {"acknowledged": False}
        return {"insertedIds": {str(i): _id for i, _id in enumerate(result.inserted_ids)}}
    if isinstance(result, UpdateResult):
        return _update_result(result)
    if isinstance(result, DeleteResult):
        if not result.acknowledged:
            return {"acknowledged": False}
        return {"deletedCount": result.deleted_count}
    if isinstance(result, ClientBulkWriteResult):
        return client_bulk_result(result)
    if isinstance(result, BulkWriteResult):
        if not result.acknowledged:
            return {"acknowledged": False}
        return {
            "deletedCount": result.deleted_count,
            "insertedCount": result.inserted_count,
            "matchedCount": result.matched_count,
            "modifiedCount": result.modified_count,
            "upsertedCount": result.upserted_count,
            "upsertedIds": {str(i): _id for i, _id in (result.upserted_ids or {}).items()},
        }
    return result


def client_bulk_result(result: ClientBulkWriteResult) -> dict[str, Any]:
    if not result.acknowledged:
        return {"acknowledged": False}
    doc: dict[str, Any] = {
        "insertedCount": result.inserted_count,
        "upsertedCount": result.upserted_count,
        "matchedCount": result.matched_count,
        "modifiedCount": result.modified_count,
        "deletedCount": result.deleted_count,
    }
    if result.has_verbose_results:
        doc["insertResults"] = {
            str(i): {"insertedId": r.inserted_id} for i, r in result.insert_results.items()
        }
        doc["updateResults"] = {
            str(i): _update_result(r, client_bulk=True) for i, r in result.update_results.items()
        }
        doc["deleteResults"] = {
            str(i): {"deletedCount": r.deleted_count} for i, r in result.delete_results.items()
        }
    return doc


def bulk_error_result(details: Mapping[str, Any]) -> dict[str, Any]:
    """The partial BulkWriteResult a collection bulkWrite's BulkWriteError carries."""
    return {
        "deletedCount": details.get("nRemoved", 0),
        "insertedCount": details.get("nInserted", 0),
        "matchedCount": details.get("nMatched", 0),
        "modifiedCount": details.get("nModified", 0),
        "upsertedCount": details.get("nUpserted", 0),
        "upsertedIds": {str(u["index"]): u["_id"] for u in details.get("upserted") or ()},
    }


def is_server_error(exc: BaseException) -> bool:
    """The error was derived from a server reply (PyMongo's own runner draws the line here)."""
    if isinstance(exc, ClientBulkWriteException):
        inner = exc.error
        if inner is not None:
            return is_server_error(inner)
        return bool(exc.write_errors or exc.write_concern_errors)
    return isinstance(exc, (OperationFailure, NotPrimaryError))


def _error_code(exc: BaseException) -> int | None:
    if isinstance(exc, ClientBulkWriteException) and exc.error is not None:
        return _error_code(exc.error)
    details = getattr(exc, "details", None)
    if isinstance(details, Mapping) and details.get("code") is not None:
        return details.get("code")
    return getattr(exc, "code", None)


def server_answer(exc: BaseException) -> str | None:
    """What the server answered, in a form two clients can be compared on; None for a client-side
    error."""
    if not is_server_error(exc):
        return None
    if isinstance(exc, ClientBulkWriteException):
        if exc.error is not None:
            return server_answer(exc.error)
        parts = [f"write error {e.get('idx')}: code {e.get('code')}: {e.get('errmsg')}"
                 for e in exc.write_errors or ()]
        parts += [f"write concern error: code {e.get('code')}: {e.get('errmsg')}"
                  for e in exc.write_concern_errors or ()]
        return "; ".join(parts)
    if isinstance(exc, BulkWriteError):
        d = exc.details
        parts = [f"write error {e.get('index')}: code {e.get('code')}: {e.get('errmsg')}"
                 for e in d.get("writeErrors") or ()]
        parts += [f"write concern error: code {e.get('code')}: {e.get('errmsg')}"
                  for e in d.get("writeConcernErrors") or ()]
        return "; ".join(parts)
    details = getattr(exc, "details", None) or {}
    code = _error_code(exc)
    name = details.get("codeName") if isinstance(details, Mapping) else None
    msg = details.get("errmsg") if isinstance(details, Mapping) and details.get("errmsg") else None
    if msg is None:
        msg = str(exc).split(", full error:")[0]
    return f"code {code}{f' ({name})' if name else ''}: {msg}"


def _describe(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- running a test ------------------------------------------------------------------------


@dataclass
class Driver:
    """A client class with PyMongo's async API, its GridFS bucket class, and a name for
    messages."""

    name: str
    client_class: type
    bucket_class: type | None = None


class SpecRun:
    """One test of a file, on one driver: setup, operations, assertions, cleanup."""

    def __init__(self, case: Case, facts: ServerFacts, driver: Driver, uri: str) -> None:
        self.case = case
        self.facts = facts
        self.driver = driver
        self.uri = uri
        self.internal = facts.internal
        self.entities: dict[str, Any] = {}
        self.clients: dict[str, ClientEntity] = {}
        self.matcher = Matcher(self.entities)
        self.fail_points: list[tuple[Any, str]] = []
        self.threads: dict[str, list[asyncio.Task[Any]]] = {}
        self.sessions: list[Any] = []

    # ---- the whole test --------------------------------------------------------------------

    async def run(self) -> None:
        spec, test = self.case.spec, self.case.test
        check_schema_version(spec)
        if test.get("skipReason"):
            raise SpecSkip(f"skipReason: {test['skipReason']}")
        self._initial_data(spec.get("initialData") or ())
        try:
            await self._create_entities(spec.get("createEntities") or ())
            for i, op in enumerate(test["operations"]):
                await self._operation(op, f"operations[{i}] {op['name']}")
        finally:
            await self._cleanup()
        for i, expected in enumerate(test.get("expectEvents") or ()):
            self._check_events(expected, f"expectEvents[{i}]")
        if "outcome" in test:
            self._check_outcome(test["outcome"])

    async def _cleanup(self) -> None:
        for tasks in self.threads.values():
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for session in self.sessions:
            try:
                await session.end_session()
            except Exception:  # a session's end tells nothing about the test
                pass
        for client, name in self.fail_points:
            try:
                await client.admin.command(SON([("configureFailPoint", name), ("mode", "off")]))
            except Exception:  # the server that accepted it will not refuse turning it off
                pass
        for entity in self.clients.values():
            await entity.client.close()
        self._wait_server_quiet()

    def _wait_server_quiet(self) -> None:
        """Let the server finish what the test left running on it: a command a fail point
        blocked goes on after its client timed out and closed the connection, and would land in
        the next test (after its initialData). Waits (at most 5 s) until currentOp shows nothing
        but the monitors' hellos."""
        deadline = time.monotonic() + 5
        idle = {"hello", "ismaster", "isMaster", "currentOp"}
        while time.monotonic() < deadline:
            try:
                ops = self.internal.admin.command("currentOp", {"$all": True})["inprog"]
            except OperationFailure:
                return  # a server without currentOp: nothing to wait by
            busy = [op for op in ops if op.get("active") and isinstance(op.get("command"), Mapping)
                    and not idle & set(op["command"])]
            if not busy:
                return
            time.sleep(0.02)

    # ---- setup -----------------------------------------------------------------------------

    def _initial_data(self, initial: Any) -> None:
        majority = WriteConcern(w="majority")
        for data in initial:
            db = self.internal.get_database(data["databaseName"], write_concern=majority)
            name = data["collectionName"]
            db.drop_collection(name)
            opts = data.get("createOptions")
            if opts:
                db.create_collection(name, **copy.deepcopy(opts))
            docs = copy.deepcopy(data["documents"])
            if docs:
                db[name].insert_many(docs)
            elif not opts:
                db.create_collection(name)

    async def _create_entities(self, entities: Any) -> None:
        for entity in entities:
            if len(entity) != 1:
                raise RunnerError(f"an entity must have one key: {entity!r}")
            kind, spec = next(iter(entity.items()))
            eid = spec["id"]
            if eid in self.entities:
                raise RunnerError(f"duplicate entity {eid!r}")
            if kind == "client":
                entity = self._make_client(spec)
                self.entities[eid] = entity
                if entity.warm_up:
                    await self._await_min_pool(entity, spec)
            elif kind == "database":
                client = self._entity(spec["client"], ClientEntity).client
                opts = _collection_or_database_options(spec.get("databaseOptions") or {})
                self.entities[eid] = client.get_database(spec["databaseName"], **opts)
            elif kind == "collection":
                db = self._entity(spec["database"])
                opts = _collection_or_database_options(spec.get("collectionOptions") or {})
                self.entities[eid] = db.get_collection(spec["collectionName"], **opts)
            elif kind == "session":
                self.entities[eid] = self._make_session(spec)
            elif kind == "bucket":
                if self.driver.bucket_class is None:
                    raise RunnerError(f"{self.driver.name} has no GridFS bucket class")
                unknown = set(spec) - {"id", "database", "bucketOptions"}
                if unknown or spec.get("bucketOptions"):
                    raise RunnerError(f"bucket options {sorted(unknown)} are not supported")
                self.entities[eid] = self.driver.bucket_class(self._entity(spec["database"]))
            elif kind == "thread":
                self.entities[eid] = self.threads.setdefault(eid, [])
            else:
                raise RunnerError(f"entity type {kind!r} is not supported by this runner")

    def _make_session(self, spec: Mapping[str, Any]) -> Any:
        client = self._entity(spec["client"], ClientEntity).client
        kwargs: dict[str, Any] = {}
        for key, value in (spec.get("sessionOptions") or {}).items():
            if key == "causalConsistency":
                kwargs["causal_consistency"] = value
            elif key == "snapshot":
                kwargs["snapshot"] = value
            elif key == "defaultTimeoutMS":
                kwargs["default_timeout"] = value / 1000  # asyncmongo's (PyMongo has none)
            elif key == "defaultTransactionOptions":
                kwargs["default_transaction_options"] = TransactionOptions(
                    **_transaction_options(value))
            else:
                raise RunnerError(f"session option {key!r} is not supported by this runner")
        session = client.start_session(**kwargs)
        self.sessions.append(session)
        return session

    def _make_client(self, spec: Mapping[str, Any]) -> ClientEntity:
        unknown = set(spec) - {"id", "uriOptions", "observeEvents", "ignoreCommandMonitoringEvents",
                               "observeSensitiveCommands", "useMultipleMongoses",
                               "awaitMinPoolSizeMS"}
        if unknown:
            raise RunnerError(f"client options {sorted(unknown)} are not supported by this runner")
        for name in spec.get("observeEvents") or ():
            if name not in _EVENT_TYPES and name not in _CMAP_EVENTS:
                raise RunnerError(f"observeEvents {name!r} is not supported by this runner")
        recorder = EventRecorder()
        kwargs: dict[str, Any] = {"serverSelectionTimeoutMS": 10000}
        # useMultipleMongoses only matters on a sharded cluster or behind a load balancer.
        if spec.get("useMultipleMongoses") is not None and self.facts.topology in (
            "sharded", "load-balanced"
        ):
            raise RunnerError("useMultipleMongoses on a sharded cluster is not supported")
        kwargs.update(copy.deepcopy(spec.get("uriOptions") or {}))
        client = self.driver.client_class(self.uri, event_listeners=[recorder], **kwargs)
        entity = ClientEntity(
            client, recorder, set(spec.get("observeEvents") or ()),
            {c.lower() for c in spec.get("ignoreCommandMonitoringEvents") or ()},
            bool(spec.get("observeSensitiveCommands")),
        )
        self.clients[spec["id"]] = entity
        entity.warm_up = spec.get("awaitMinPoolSizeMS") is not None
        entity.max_pool_size = kwargs.get("maxPoolSize")
        return entity

    async def _await_min_pool(self, entity: ClientEntity, spec: Mapping[str, Any]) -> None:
        """awaitMinPoolSizeMS: the client connected before the test goes on, so that the tests'
        timeouts do not include connection handshakes. A driver without a connection pool API
        is made to open its connections: concurrent pings (not recorded), as many as the threads
        that asyncmongo starts at once (each worker thread has a connection of its own), under
        the wait the test allows, not the client's timeoutMS."""
        uri_options = spec.get("uriOptions") or {}
        count = max(int(uri_options.get("minPoolSize") or 1), 4)
        if uri_options.get("maxPoolSize"):
            count = min(count, int(uri_options["maxPoolSize"]))
        entity.recorder.paused = True
        try:
            with pymongo.timeout(spec["awaitMinPoolSizeMS"] / 1000):
                await asyncio.gather(*(entity.client.admin.command("ping")
                                       for _ in range(count)))
        finally:
            entity.recorder.paused = False

    def _entity(self, name: str, kind: type | None = None) -> Any:
        if name not in self.entities:
            raise RunnerError(f"no entity named {name!r}")
        entity = self.entities[name]
        if kind is not None and not isinstance(entity, kind):
            raise RunnerError(
                f"entity {name!r} is a {type(entity).__name__}, not a {kind.__name__}"
            )
        return entity

    # ---- operations ------------------------------------------------------------------------

    async def _operation(self, op: Mapping[str, Any], where: str) -> BaseException | None:
        """Run one operation and check its outcome; returns the error it was expected to raise
        (a withTransaction callback raises it on), else None."""
        if op["object"] == "testRunner":
            await self._runner_operation(op, where)
            return None
        target = self._entity(op["object"])
        if isinstance(target, ClientEntity):
            target = target.client
        args = copy.deepcopy(op.get("arguments") or {})
        expect_error = op.get("expectError")
        ignore = op.get("ignoreResultAndError")
        # An operation's timeoutMS is PyMongo's way to give one: a pymongo.timeout() block.
        timeout_ms = args.pop("timeoutMS", None)
        try:
            with (pymongo.timeout(timeout_ms / 1000) if timeout_ms is not None else _no_block()):
                result = await Operations(self, target, where).call(op["name"], args)
        except (SpecSkip, RunnerError, SpecFailure):
            raise
        except Exception as exc:
            if ignore:
                return None
            if expect_error is None:
                raise SpecFailure(
                    where, f"expected no error, got {type(exc).__name__}: {exc}",
                    answer=server_answer(exc), code=_error_code(exc),
                ) from exc
            self._check_error(expect_error, exc, where)
            return exc
        if ignore:
            return None
        if expect_error is not None:
            server_side = not expect_error.get("isClientError", False)
            raise SpecFailure(
                where, f"expected an error {expect_error!r}, got the result {_describe(result)}",
                # A server error that did not come: the server accepted what MongoDB refuses.
                answer="the server accepted the operation" if server_side else None,
            )
        if "expectResult" in op:
            self._check_result(op["name"], op["expectResult"], result, where)
        if op.get("saveResultAsEntity"):
            self.entities[op["saveResultAsEntity"]] = result
        return None

    def _check_result(self, name: str, expected: Any, actual: Any, where: str) -> None:
        try:
            if name in ("find", "aggregate") and isinstance(expected, list):
                self.matcher.match_root_list(expected, actual)
            else:
                self.matcher.match(expected, actual, "", root=True)
        except Mismatch as exc:
            raise SpecFailure(f"{where}: expectResult", str(exc),
                              answer=f"result {_describe(actual)}") from None

    def _check_error(self, expected: Mapping[str, Any], exc: BaseException, where: str) -> None:
        where = f"{where}: expectError"
        server = is_server_error(exc)
        answer = server_answer(exc)
        got = f"{type(exc).__name__}: {exc}"

        def fail(message: str, from_server: bool = True) -> None:
            raise SpecFailure(where, f"{message} (got {got})",
                              answer=answer if (from_server and server) else None,
                              code=_error_code(exc)) from exc

        known = {"isError", "isClientError", "isTimeoutError", "errorContains", "errorCode",
                 "errorCodeName", "errorLabelsContain", "errorLabelsOmit", "errorResponse",
                 "expectResult", "writeErrors", "writeConcernErrors"}
        if set(expected) - known:
            raise RunnerError(f"expectError keys {sorted(set(expected) - known)} not supported")
        if "isClientError" in expected:
            if expected["isClientError"] and server:
                # The client let through what it should have refused.
                fail("expected a client-side error, the server answered", from_server=False)
            if not expected["isClientError"] and not server:
                fail("expected a server error, got a client-side one", from_server=False)
        if "isTimeoutError" in expected:
            is_timeout = isinstance(exc, PyMongoError) and exc.timeout
            if expected["isTimeoutError"] and not is_timeout:
                fail("expected a timeout error")
            if not expected["isTimeoutError"] and is_timeout:
                fail("expected an error that is not a timeout", from_server=False)
        inner = exc
        if isinstance(exc, ClientBulkWriteException) and exc.error is not None:
            inner = exc.error
        if "errorContains" in expected:
            texts = [str(exc)]
            details = getattr(exc, "details", None)
            if details is not None:
                texts.append(str(details))
            if inner is not exc:
                texts.append(str(inner))
            if not any(expected["errorContains"].lower() in t.lower() for t in texts):
                fail(f"error message should contain {expected['errorContains']!r}")
        if "errorCode" in expected and _error_code(exc) != expected["errorCode"]:
            fail(f"expected error code {expected['errorCode']}")
        if "errorCodeName" in expected:
            details = getattr(inner, "details", None) or {}
            if str(details.get("codeName", "")).lower() != expected["errorCodeName"].lower():
                fail(f"expected codeName {expected['errorCodeName']}")
        for label in expected.get("errorLabelsContain") or ():
            if not (hasattr(inner, "has_error_label") and inner.has_error_label(label)):
                fail(f"expected error label {label!r}")
        for label in expected.get("errorLabelsOmit") or ():
            if hasattr(inner, "has_error_label") and inner.has_error_label(label):
                fail(f"unexpected error label {label!r}")
        if "errorResponse" in expected:
            details = getattr(inner, "details", None)
            try:
                self.matcher.match(expected["errorResponse"], details, "errorResponse", root=True)
            except Mismatch as m:
                fail(str(m))
        if "writeErrors" in expected:
            if not isinstance(exc, ClientBulkWriteException):
                fail("expected a client bulk write exception with writeErrors", from_server=False)
            actual = {}
            for err in exc.write_errors or ():
                doc = dict(err)
                doc.setdefault("message", err.get("errmsg"))
                if "errInfo" in err:
                    doc.setdefault("details", err["errInfo"])
                actual[str(err["idx"])] = doc
            if set(actual) != set(expected["writeErrors"]):
                fail(f"write errors at {sorted(actual)}, expected at "
                     f"{sorted(expected['writeErrors'])}")
            for key, value in expected["writeErrors"].items():
                try:
                    self.matcher.match(value, actual[key], f"writeErrors.{key}", root=True)
                except Mismatch as m:
                    fail(str(m))
        if "writeConcernErrors" in expected:
            if not isinstance(exc, ClientBulkWriteException):
                fail("expected a client bulk write exception with writeConcernErrors",
                     from_server=False)
            wces = []
            for err in exc.write_concern_errors or ():
                doc = dict(err)
                doc.setdefault("message", err.get("errmsg"))
                if "errInfo" in err:
                    doc.setdefault("details", err["errInfo"])
                wces.append(doc)
            if len(wces) != len(expected["writeConcernErrors"]):
                fail(f"{len(wces)} write concern errors, expected "
                     f"{len(expected['writeConcernErrors'])}")
            for i, (e, a) in enumerate(zip(expected["writeConcernErrors"], wces)):
                try:
                    self.matcher.match(e, a, f"writeConcernErrors[{i}]", root=True)
                except Mismatch as m:
                    fail(str(m))
        if "expectResult" in expected:
            if isinstance(exc, BulkWriteError):
                partial: Any = bulk_error_result(exc.details)
            elif isinstance(exc, ClientBulkWriteException):
                pr = exc.partial_result
                partial = None if pr is None else client_bulk_result(pr)
            else:
                fail("expectResult needs a bulk write exception", from_server=False)
            try:
                self.matcher.match(expected["expectResult"], partial, "expectResult", root=True)
            except Mismatch as m:
                raise SpecFailure(where, str(m), answer=f"partial result {_describe(partial)}",
                                  code=_error_code(exc)) from exc

    async def _runner_operation(self, op: Mapping[str, Any], where: str) -> None:
        args = op.get("arguments") or {}
        name = op["name"]
        if name == "failPoint":
            entity = self._entity(args["client"], ClientEntity)
            command = SON(copy.deepcopy(args["failPoint"]))
            try:
                await entity.client.admin.command(command)
            except OperationFailure as exc:
                # Asked, not assumed: the server's own answer is the reason.
                raise SpecSkip(
                    f"needs a fail point; the server refuses configureFailPoint: "
                    f"{server_answer(exc)}"
                ) from None
            self.fail_points.append((entity.client, command["configureFailPoint"]))
        elif name in ("assertCollectionExists", "assertCollectionNotExists"):
            names = self.internal[args["databaseName"]].list_collection_names()
            if (args["collectionName"] in names) != (name == "assertCollectionExists"):
                raise SpecFailure(where, f"collection {args['collectionName']!r}: {names}",
                                  answer=f"collections {names}")
        elif name in ("assertIndexExists", "assertIndexNotExists"):
            coll = self.internal[args["databaseName"]][args["collectionName"]]
            names = [ix["name"] for ix in coll.list_indexes()]
            if (args["indexName"] in names) != (name == "assertIndexExists"):
                raise SpecFailure(where, f"index {args['indexName']!r}: {names}",
                                  answer=f"indexes {names}")
        elif name == "createEntities":
            await self._create_entities(args["entities"])
        elif name == "wait":
            await asyncio.sleep(args["ms"] / 1000)
        elif name == "runOnThread":
            # A thread of the format is a task here: its operations run concurrently with the
            # test's, in order among themselves.
            tasks = self._entity(args["thread"], list)
            previous = tasks[-1] if tasks else None
            operation = args["operation"]

            async def run_after() -> None:
                if previous is not None:
                    await previous
                await self._operation(operation, f"{where} ({operation['name']})")

            tasks.append(asyncio.ensure_future(run_after()))
        elif name == "waitForThread":
            tasks = self._entity(args["thread"], list)
            for task in tasks:
                await task  # a failure of the thread's operations is the test's
        elif name == "waitForEvent":
            await self._wait_for_event(args, where)
        else:
            raise RunnerError(f"testRunner operation {name!r} is not supported by this runner")

    def _started_on_worker(self, entity: ClientEntity, kind: str, count: int) -> bool:
        """asyncmongo hands a job's command events over when the job completes (design.md), so
        a commandStartedEvent of a command still running is not seen yet: for one started event,
        the runner waits instead for the job to be running, that is taken by a worker (nothing
        left in the client's queue) while a thread's operation awaits it."""
        core = getattr(entity.client, "_core", None)
        if core is None or kind != "commandStartedEvent" or count != 1:
            return False
        pending = [t for tasks in self.threads.values() for t in tasks if not t.done()]
        stats = core.stats()
        return bool(pending) and stats["queued"] == 0 and stats["workers"] > 0

    async def _wait_for_event(self, args: Mapping[str, Any], where: str) -> None:
        entity = self._entity(args["client"], ClientEntity)
        expected = args["event"]
        kind, fields = next(iter(expected.items()))
        if kind not in _EVENT_TYPES:
            raise RunnerError(f"waitForEvent {kind!r} is not supported by this runner")
        deadline = time.monotonic() + 10
        first = True
        while True:
            count = 0
            for event in entity.observed():
                try:
                    self._check_event(expected, event, where)
                except SpecFailure:
                    continue
                count += 1
            # (Not before the loop has turned: a thread's task then has sent its operation.)
            if count >= args["count"] or (
                    not first and self._started_on_worker(entity, kind, args["count"])):
                return
            first = False
            if time.monotonic() > deadline:
                raise SpecFailure(where, f"{count} {kind} events after 10 s, waited for "
                                         f"{args['count']}")
            await asyncio.sleep(0.01)

    # ---- after the operations --------------------------------------------------------------

    def _check_events(self, expected: Mapping[str, Any], where: str) -> None:
        if expected.get("eventType", "command") == "cmap":
            self._check_cmap_events(expected, where)
            return
        if expected.get("eventType", "command") != "command":
            raise RunnerError(f"eventType {expected['eventType']!r} is not supported")
        entity = self._entity(expected["client"], ClientEntity)
        actual = entity.observed()
        wanted = expected["events"]
        names = [f"{type(e).__name__[7:-5]}:{e.command_name}" for e in actual]
        if len(actual) < len(wanted) or (
            len(actual) > len(wanted) and not expected.get("ignoreExtraEvents")
        ):
            raise SpecFailure(
                where, f"expected {len(wanted)} events, observed {len(actual)}: {names}",
                # The number of round trips follows the server's replies (cursor ids...), but
                # only the same count from the witness makes it the server's doing.
                answer=f"events {names}",
            )
        for i, (exp, event) in enumerate(zip(wanted, actual)):
            self._check_event(exp, event, f"{where}.events[{i}]")

    def _check_cmap_events(self, expected: Mapping[str, Any], where: str) -> None:
        """Connection pool events, for a driver that publishes none (asyncmongo: libmongoc 1.23
        has no connection pool events): only "no event" can be checked, and only for a client of
        one connection (maxPoolSize=1), by what a pool event would have left: a cleared pool (or
        a connection closed and another created) puts the commands after it on a new connection,
        with another serverConnectionId."""
        entity = self._entity(expected["client"], ClientEntity)
        if expected["events"] or entity.max_pool_size != 1:
            raise RunnerError(f"{self.driver.name} publishes no connection pool events")
        ids = {e.server_connection_id for e in entity.recorder.events}
        if len(ids) > 1:
            raise SpecFailure(where, f"expected no connection pool event; the client's commands "
                                     f"came on {len(ids)} connections {sorted(ids)}")

    def _check_event(self, expected: Mapping[str, Any], event: Any, where: str) -> None:
        if len(expected) != 1:
            raise RunnerError(f"an expected event must have one key: {expected!r}")
        kind, fields = next(iter(expected.items()))
        if kind not in _EVENT_TYPES:
            raise RunnerError(f"event {kind!r} is not supported by this runner")
        if not isinstance(event, _EVENT_TYPES[kind]):
            raise SpecFailure(where, f"expected {kind}, observed {type(event).__name__} "
                                     f"({event.command_name})")
        for key, value in fields.items():
            if key == "command":
                try:
                    self.matcher.match(value, event.command, "command", root=True)
                except Mismatch as m:
                    # The command is what the client sent: never the server's doing.
                    raise SpecFailure(where, f"{m} in {_describe(event.command, 1000)}") from None
            elif key == "reply":
                try:
                    self.matcher.match(value, event.reply, "reply", root=True)
                except Mismatch as m:
                    raise SpecFailure(where, f"{m} in {_describe(event.reply, 1000)}",
                                      answer=f"reply {_describe(event.reply)}") from None
            elif key == "commandName":
                if event.command_name != value:
                    raise SpecFailure(where, f"commandName {event.command_name!r} != {value!r}")
            elif key == "databaseName":
                if event.database_name != value:
                    raise SpecFailure(where, f"databaseName {event.database_name!r} != {value!r}")
            elif key == "hasServerConnectionId":
                has = isinstance(event.server_connection_id, int) and event.server_connection_id > 0
                if has != value:
                    raise SpecFailure(where, f"serverConnectionId {event.server_connection_id!r}")
            elif key == "hasServiceId":
                if (event.service_id is not None) != value:
                    raise SpecFailure(where, f"serviceId {event.service_id!r}")
            else:
                raise RunnerError(f"event field {key!r} is not supported by this runner")

    def _check_outcome(self, outcome: Any) -> None:
        for data in outcome:
            coll = self.internal[data["databaseName"]].get_collection(
                data["collectionName"], read_concern=ReadConcern("local"),
                codec_options=CodecOptions(document_class=dict),
            )
            actual = list(coll.find({}, sort=[("_id", 1)]))
            where = f"outcome {data['databaseName']}.{data['collectionName']}"
            try:
                assert_same_documents(data["documents"], actual, where)
            except Mismatch as m:
                raise SpecFailure(
                    where, str(m), answer=f"documents {_describe(actual, 600)}"
                ) from None


def _read_preference(doc: Mapping[str, Any]) -> Any:
    mode = read_pref_mode_from_name(doc["mode"])
    return make_read_preference(mode, doc.get("tagSets"), doc.get("maxStalenessSeconds", -1))


def _write_concern(doc: Mapping[str, Any]) -> WriteConcern:
    known = {"w", "wtimeoutMS", "journal"}
    if set(doc) - known:
        raise RunnerError(f"writeConcern fields {sorted(set(doc) - known)} not supported")
    return WriteConcern(w=doc.get("w"), wtimeout=doc.get("wtimeoutMS"), j=doc.get("journal"))


def _collection_or_database_options(opts: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in opts.items():
        if key == "readConcern":
            out["read_concern"] = ReadConcern(value.get("level"))
        elif key == "writeConcern":
            out["write_concern"] = _write_concern(value)
        elif key == "readPreference":
            out["read_preference"] = _read_preference(value)
        elif key == "timeoutMS":
            out["timeout"] = value / 1000  # asyncmongo's timeout= (PyMongo 4.20 has none)
        else:
            raise RunnerError(f"collection/database option {key!r} is not supported")
    return out


def _transaction_options(doc: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "readConcern":
            out["read_concern"] = ReadConcern(value.get("level"))
        elif key == "writeConcern":
            out["write_concern"] = _write_concern(value)
        elif key == "readPreference":
            out["read_preference"] = _read_preference(value)
        elif key == "maxCommitTimeMS":
            out["max_commit_time_ms"] = value
        else:
            raise RunnerError(f"transaction option {key!r} is not supported")
    return out


# ---- the operations ------------------------------------------------------------------------

_MODELS = {
    "insertOne": (InsertOne, {"document": "document"}),
    "updateOne": (UpdateOne, {"filter": "filter", "update": "update", "upsert": "upsert",
                              "collation": "collation", "arrayFilters": "array_filters",
                              "hint": "hint", "sort": "sort"}),
    "updateMany": (UpdateMany, {"filter": "filter", "update": "update", "upsert": "upsert",
                                "collation": "collation", "arrayFilters": "array_filters",
                                "hint": "hint"}),
    "replaceOne": (ReplaceOne, {"filter": "filter", "replacement": "replacement",
                                "upsert": "upsert", "collation": "collation", "hint": "hint",
                                "sort": "sort"}),
    "deleteOne": (DeleteOne, {"filter": "filter", "collation": "collation", "hint": "hint"}),
    "deleteMany": (DeleteMany, {"filter": "filter", "collation": "collation", "hint": "hint"}),
}


def _models(requests: list[Mapping[str, Any]], with_namespace: bool) -> list[Any]:
    out = []
    for request in requests:
        if len(request) != 1:
            raise RunnerError(f"a write model must have one key: {request!r}")
        kind, fields = next(iter(request.items()))
        if kind not in _MODELS:
            raise RunnerError(f"write model {kind!r} is not supported")
        cls, names = _MODELS[kind]
        fields = dict(fields)
        kwargs = {}
        if with_namespace:
            kwargs["namespace"] = fields.pop("namespace")
        for key, value in fields.items():
            if key not in names:
                raise RunnerError(f"{kind} field {key!r} is not supported")
            kwargs[names[key]] = value
        out.append(cls(**kwargs))
    return out


class Operations:
    """Entity operations: the format's camelCase arguments mapped onto PyMongo's API. An argument
    the runner does not know is an error (the format says so), never silently dropped."""

    def __init__(self, run: SpecRun, target: Any, where: str) -> None:
        self.run = run
        self.target = target
        self.where = where

    async def call(self, name: str, args: dict[str, Any]) -> Any:
        kind = type(self.target).__name__
        if kind.endswith("MongoClient"):
            prefix = "client_"
        elif kind.endswith("Database"):
            prefix = "database_"
        elif kind.endswith("ChangeStream"):
            prefix = "stream_"
        elif kind.endswith("Collection"):
            prefix = "collection_"
        elif kind.endswith("ClientSession"):
            prefix = "session_"
        elif kind.endswith("GridFSBucket"):
            prefix = "bucket_"
        elif kind in ("FindCursor", "AsyncCommandCursor"):
            prefix = "cursor_"
        else:
            raise RunnerError(f"operations on {kind} are not supported")
        method = getattr(self, prefix + name, None)
        if method is None:
            raise RunnerError(f"operation {name!r} on a {kind} is not supported by this runner")
        return await method(args)

    # ---- helpers ---------------------------------------------------------------------------

    def _map(self, args: dict[str, Any], names: Mapping[str, str], method: Any = None,
             command_fields: bool | None = None) -> dict[str, Any]:
        """Arguments renamed to PyMongo's keywords. ``rawData`` goes to a ``method`` that passes
        extra keywords to the server as command fields; where the API has no way to send it, the
        test is skipped with that reason."""
        out: dict[str, Any] = {}
        for key, value in args.items():
            if key == "rawData":
                if command_fields is None:
                    command_fields = method is not None and _takes_extra_fields(method)
                if not command_fields:
                    self._no_raw_data(method)
                out["rawData"] = value
                continue
            if key == "session":
                out["session"] = self.run._entity(value)
                continue
            if key not in names:
                raise RunnerError(f"{self.where}: argument {key!r} is not supported by this runner")
            target = names[key]
            if key == "timeoutMode":
                value = _TIMEOUT_MODES[value]
            elif key == "cursorType":
                value = _CURSOR_TYPES[value]
            if key == "writeConcern":
                value = _write_concern(value)
            elif key == "readConcern":
                value = ReadConcern(value.get("level"))
            elif key == "readPreference":
                value = _read_preference(value)
            out[target] = value
        return out

    def _no_raw_data(self, method: Any) -> None:
        """The API has no way to send rawData: a skip if PyMongo's has none either (checked, not
        assumed), else a failure of the driver's API."""
        kind = type(self.target).__name__
        api = f"{kind}.{method.__name__}" if method is not None else f"this {kind} operation"
        theirs = getattr(_PYMONGO_CLASSES.get(kind), getattr(method, "__name__", ""), None)
        # PyMongo's find passes extra keywords to its cursor, not to the server.
        if (theirs is not None and _takes_extra_fields(theirs)
                and getattr(method, "__name__", "") != "find"):
            raise SpecFailure(self.where, f"rawData: {api} cannot send it, PyMongo's can")
        raise SpecSkip(
            f"rawData: {api} has no option to send it, nor has PyMongo {pymongo.version}'s "
            "(the CRUD spec makes rawData an internal option)"
        )

    # ---- collection ------------------------------------------------------------------------

    async def collection_insertOne(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"document": "document", "bypassDocumentValidation":
                              "bypass_document_validation", "comment": "comment"},
                       self.target.insert_one)
        return result_document(await self.target.insert_one(**kw))

    async def collection_insertMany(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"documents": "documents", "ordered": "ordered",
                              "bypassDocumentValidation": "bypass_document_validation",
                              "comment": "comment"}, self.target.insert_many)
        return result_document(await self.target.insert_many(**kw))

    _UPDATE = {"filter": "filter", "upsert": "upsert", "collation": "collation", "hint": "hint",
               "let": "let", "comment": "comment",
               "bypassDocumentValidation": "bypass_document_validation"}

    async def collection_updateOne(self, args: dict[str, Any]) -> Any:
        names = dict(self._UPDATE, update="update", arrayFilters="array_filters", sort="sort")
        kw = self._map(args, names, self.target.update_one)
        return result_document(await self.target.update_one(**kw))

    async def collection_updateMany(self, args: dict[str, Any]) -> Any:
        names = dict(self._UPDATE, update="update", arrayFilters="array_filters")
        kw = self._map(args, names, self.target.update_many)
        return result_document(await self.target.update_many(**kw))

    async def collection_replaceOne(self, args: dict[str, Any]) -> Any:
        names = dict(self._UPDATE, replacement="replacement", sort="sort")
        kw = self._map(args, names, self.target.replace_one)
        return result_document(await self.target.replace_one(**kw))

    async def collection_deleteOne(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"filter": "filter", "collation": "collation", "hint": "hint",
                              "let": "let", "comment": "comment"}, self.target.delete_one)
        return result_document(await self.target.delete_one(**kw))

    async def collection_deleteMany(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"filter": "filter", "collation": "collation", "hint": "hint",
                              "let": "let", "comment": "comment"}, self.target.delete_many)
        return result_document(await self.target.delete_many(**kw))

    async def collection_bulkWrite(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"requests": "requests", "ordered": "ordered", "comment": "comment",
                              "let": "let",
                              "bypassDocumentValidation": "bypass_document_validation"},
                       self.target.bulk_write)
        kw["requests"] = _models(kw["requests"], with_namespace=False)
        return result_document(await self.target.bulk_write(**kw))

    _FIND_AND_MODIFY = {"filter": "filter", "projection": "projection", "sort": "sort",
                        "upsert": "upsert", "returnDocument": "return_document", "hint": "hint",
                        "let": "let", "comment": "comment", "collation": "collation",
                        # Extra command fields, as PyMongo takes them.
                        "bypassDocumentValidation": "bypassDocumentValidation",
                        "maxTimeMS": "maxTimeMS"}

    def _return_document(self, kw: dict[str, Any]) -> None:
        if "return_document" in kw:
            value = str(kw["return_document"]).lower()
            if value not in ("before", "after"):
                raise RunnerError(f"returnDocument {kw['return_document']!r}")
            after = value == "after"
            kw["return_document"] = ReturnDocument.AFTER if after else ReturnDocument.BEFORE

    async def collection_findOneAndUpdate(self, args: dict[str, Any]) -> Any:
        names = dict(self._FIND_AND_MODIFY, update="update", arrayFilters="array_filters")
        kw = self._map(args, names, self.target.find_one_and_update)
        self._return_document(kw)
        return await self.target.find_one_and_update(**kw)

    async def collection_findOneAndReplace(self, args: dict[str, Any]) -> Any:
        names = dict(self._FIND_AND_MODIFY, replacement="replacement")
        kw = self._map(args, names, self.target.find_one_and_replace)
        self._return_document(kw)
        return await self.target.find_one_and_replace(**kw)

    async def collection_findOneAndDelete(self, args: dict[str, Any]) -> Any:
        names = {k: v for k, v in self._FIND_AND_MODIFY.items()
                 if k not in ("upsert", "returnDocument", "bypassDocumentValidation")}
        kw = self._map(args, names, self.target.find_one_and_delete)
        return await self.target.find_one_and_delete(**kw)

    _FIND = {"filter": "filter", "projection": "projection", "sort": "sort",
             "skip": "skip", "limit": "limit", "batchSize": "batch_size",
             "collation": "collation", "comment": "comment", "hint": "hint",
             "let": "let", "allowDiskUse": "allow_disk_use",
             "maxTimeMS": "max_time_ms", "min": "min", "max": "max",
             "returnKey": "return_key", "showRecordId": "show_record_id",
             "cursorType": "cursor_type", "timeoutMode": "timeout_mode",
             "maxAwaitTimeMS": "max_await_time_ms"}

    def _find_cursor(self, args: dict[str, Any]) -> Any:
        # find's extra keywords are cursor options, not command fields.
        kw = self._map(args, self._FIND, self.target.find, command_fields=False)
        max_await = kw.pop("max_await_time_ms", None)
        cursor = self.target.find(**kw)
        if max_await is not None:
            cursor.max_await_time_ms(max_await)
        return cursor

    async def collection_find(self, args: dict[str, Any]) -> Any:
        return await self._find_cursor(args).to_list()

    async def collection_createFindCursor(self, args: dict[str, Any]) -> Any:
        return await FindCursor.start(self._find_cursor(args))

    async def collection_findOne(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"filter": "filter", "projection": "projection", "sort": "sort",
                              "skip": "skip", "collation": "collation", "comment": "comment",
                              "hint": "hint", "let": "let", "maxTimeMS": "max_time_ms"},
                       self.target.find_one)
        return await self.target.find_one(**kw)

    async def collection_aggregate(self, args: dict[str, Any]) -> Any:
        return await _aggregate(self, self.target, args)

    async def collection_countDocuments(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"filter": "filter", "comment": "comment", "skip": "skip",
                              "limit": "limit", "collation": "collation", "hint": "hint",
                              "maxTimeMS": "maxTimeMS"}, self.target.count_documents)
        return await self.target.count_documents(**kw)

    async def collection_estimatedDocumentCount(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"comment": "comment", "maxTimeMS": "maxTimeMS"},
                       self.target.estimated_document_count)
        return await self.target.estimated_document_count(**kw)

    async def collection_count(self, args: dict[str, Any]) -> Any:
        # PyMongo 4 (and so asyncmongo) removed Collection.count(): the deprecated operation is the
        # count command, sent with its options by estimated_document_count, which sends that
        # command (a retryable read, with the collection's read preference, read concern and
        # timeout) with its keyword arguments as fields.
        names = {"filter": "query", "skip": "skip", "limit": "limit", "collation": "collation",
                 "hint": "hint", "maxTimeMS": "maxTimeMS", "comment": "comment"}
        kw = self._map(args, names, self.target.estimated_document_count)
        return await self.target.estimated_document_count(**kw)

    async def collection_distinct(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"fieldName": "key", "filter": "filter", "collation": "collation",
                              "comment": "comment", "hint": "hint", "maxTimeMS": "maxTimeMS"},
                       self.target.distinct)
        return await self.target.distinct(**kw)

    async def collection_createIndex(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"keys": "keys", "name": "name", "unique": "unique",
                              "comment": "comment", "maxTimeMS": "maxTimeMS"},
                       self.target.create_index)
        kw["keys"] = list(kw["keys"].items())
        return await self.target.create_index(**kw)

    # ---- database --------------------------------------------------------------------------

    async def database_aggregate(self, args: dict[str, Any]) -> Any:
        return await _aggregate(self, self.target, args)

    async def database_dropCollection(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"collection": "name_or_collection", "comment": "comment"},
                       self.target.drop_collection)
        await self.target.drop_collection(**kw)
        return None

    async def database_createCollection(self, args: dict[str, Any]) -> Any:
        names = {"collection": "name", "viewOn": "viewOn", "pipeline": "pipeline",
                 "capped": "capped", "size": "size", "max": "max", "collation": "collation",
                 "validator": "validator", "timeseries": "timeseries",
                 "clusteredIndex": "clusteredIndex", "expireAfterSeconds": "expireAfterSeconds"}
        kw = self._map(args, names, self.target.create_collection)
        # As PyMongo's own runner: no listCollections round trip before the create.
        return await self.target.create_collection(check_exists=False, **kw)

    async def database_modifyCollection(self, args: dict[str, Any]) -> Any:
        # No helper in PyMongo's API: the collMod command through AsyncDatabase.command.
        args = dict(args)
        cmd: dict[str, Any] = {"collMod": args.pop("collection")}
        for key in list(args):
            if key not in ("validator", "validationLevel", "validationAction", "index",
                           "changeStreamPreAndPostImages", "expireAfterSeconds", "viewOn",
                           "pipeline"):
                raise RunnerError(f"{self.where}: argument {key!r} is not supported by this runner")
            cmd[key] = args.pop(key)
        await self.target.command(SON(cmd))
        return None

    async def database_runCommand(self, args: dict[str, Any]) -> Any:
        args = dict(args)
        command = SON([(args.pop("commandName"), 1)])
        command.update(args.pop("command"))
        kw = self._map(args, {"readPreference": "read_preference"})
        return await self.target.command(command, **kw)

    # ---- client ----------------------------------------------------------------------------

    async def client_clientBulkWrite(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"models": "models", "ordered": "ordered",
                              "verboseResults": "verbose_results", "comment": "comment",
                              "let": "let", "writeConcern": "write_concern",
                              "bypassDocumentValidation": "bypass_document_validation"},
                       self.target.bulk_write)
        kw["models"] = _models(kw["models"], with_namespace=True)
        return result_document(await self.target.bulk_write(**kw))


    async def collection_listIndexes(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"timeoutMode": "timeout_mode", "comment": "comment"})
        return await (await self.target.list_indexes(**kw)).to_list()

    async def collection_listIndexNames(self, args: dict[str, Any]) -> Any:
        # The index management specification's listIndexNames; PyMongo's API (and so
        # asyncmongo's) has none: the same listIndexes, its names taken here.
        kw = self._map(args, {"comment": "comment"})
        return [ix["name"] for ix in await (await self.target.list_indexes(**kw)).to_list()]

    async def collection_dropIndex(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"name": "index_or_name", "maxTimeMS": "maxTimeMS",
                              "comment": "comment"}, self.target.drop_index)
        await self.target.drop_index(**kw)
        return None

    async def collection_dropIndexes(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"maxTimeMS": "maxTimeMS", "comment": "comment"},
                       self.target.drop_indexes)
        await self.target.drop_indexes(**kw)
        return None

    async def collection_drop(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"comment": "comment"})
        await self.target.drop(**kw)
        return None

    _WATCH = {"pipeline": "pipeline", "fullDocument": "full_document",
              "resumeAfter": "resume_after", "maxAwaitTimeMS": "max_await_time_ms",
              "batchSize": "batch_size", "collation": "collation", "comment": "comment",
              "startAfter": "start_after", "showExpandedEvents": "show_expanded_events"}

    async def _watch(self, args: dict[str, Any]) -> Any:
        return await self.target.watch(**self._map(args, self._WATCH))

    collection_createChangeStream = _watch
    database_createChangeStream = _watch
    client_createChangeStream = _watch

    # ---- database: listings and cursor commands ----------------------------------------------

    async def database_listCollections(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"filter": "filter", "timeoutMode": "timeout_mode",
                              "comment": "comment"})
        return await (await self.target.list_collections(**kw)).to_list()

    async def database_listCollectionNames(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"filter": "filter", "comment": "comment"})
        return await self.target.list_collection_names(**kw)

    async def database_createCommandCursor(self, args: dict[str, Any]) -> Any:
        args = dict(args)
        body = args.pop("command")
        command = SON([(args.pop("commandName", next(iter(body))), 1)])
        command.update(body)
        kw = self._map(args, {"cursorType": "cursor_type", "batchSize": "batch_size",
                              "timeoutMode": "timeout_mode", "maxTimeMS": "max_await_time_ms",
                              "comment": "comment"})
        cursor_type = kw.pop("cursor_type", None)
        if cursor_type in (CursorType.TAILABLE, CursorType.TAILABLE_AWAIT):
            command["tailable"] = True
        if cursor_type == CursorType.TAILABLE_AWAIT:
            command["awaitData"] = True
        batch_size = kw.pop("batch_size", None)
        cursor = await self.target.cursor_command(command, **kw)
        if batch_size:
            cursor.batch_size(batch_size)
        return cursor

    async def database_runCursorCommand(self, args: dict[str, Any]) -> Any:
        return await (await self.database_createCommandCursor(args)).to_list()

    # ---- client: listings ----------------------------------------------------------------------

    async def client_listDatabases(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"filter": "filter", "comment": "comment"})
        return await (await self.target.list_databases(**kw)).to_list()

    async def client_listDatabaseNames(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"comment": "comment"})
        return await self.target.list_database_names(**kw)

    # ---- sessions ----------------------------------------------------------------------------

    async def session_startTransaction(self, args: dict[str, Any]) -> Any:
        kw = _transaction_options(args)
        await self.target.start_transaction(**kw)
        return None

    async def session_commitTransaction(self, args: dict[str, Any]) -> Any:
        self._map(args, {})
        await self.target.commit_transaction()
        return None

    async def session_abortTransaction(self, args: dict[str, Any]) -> Any:
        self._map(args, {})
        await self.target.abort_transaction()
        return None

    async def session_withTransaction(self, args: dict[str, Any]) -> Any:
        args = dict(args)
        operations = args.pop("callback")
        kw = _transaction_options(args)
        run = self.run

        async def callback(_session: Any) -> None:
            for i, op in enumerate(operations):
                error = await run._operation(op, f"{self.where} callback[{i}] {op['name']}")
                if error is not None:
                    raise error  # expected: the callback fails with it, as it did

        await self.target.with_transaction(callback, **kw)
        return None

    # ---- GridFS buckets ------------------------------------------------------------------------

    async def bucket_upload(self, args: dict[str, Any]) -> Any:
        args = dict(args)
        source = binascii.unhexlify(args.pop("source")["$$hexBytes"])
        kw = self._map(args, {"filename": "filename", "chunkSizeBytes": "chunk_size_bytes",
                              "metadata": "metadata"})
        return await self.target.upload_from_stream(source=source, **kw)

    async def bucket_download(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"id": "file_id"})
        stream = await self.target.open_download_stream(**kw)
        try:
            return await stream.read()
        finally:
            await stream.close()

    async def bucket_delete(self, args: dict[str, Any]) -> Any:
        await self.target.delete(**self._map(args, {"id": "file_id"}))
        return None

    async def bucket_rename(self, args: dict[str, Any]) -> Any:
        await self.target.rename(**self._map(args, {"id": "file_id",
                                                    "newFilename": "new_filename"}))
        return None

    async def bucket_drop(self, args: dict[str, Any]) -> Any:
        # The GridFS specification's drop: PyMongo's bucket has none (nor asyncmongo's); the files
        # and chunks collections dropped under the bucket's timeout, as PyMongo's own runner does.
        self._map(args, {})
        bucket = self.target
        with (pymongo.timeout(bucket._timeout) if pymongo._csot.get_timeout() is None
              and getattr(bucket, "_timeout", None) is not None else _no_block()):
            await bucket._files.drop()
            await bucket._chunks.drop()
        return None

    async def bucket_find(self, args: dict[str, Any]) -> Any:
        kw = self._map(args, {"filter": "filter", "batchSize": "batch_size", "sort": "sort",
                              "skip": "skip", "limit": "limit"})
        return [gout._file for gout in await self.target.find(**kw).to_list()]

    # ---- cursors and change streams ------------------------------------------------------------

    async def cursor_iterateUntilDocumentOrError(self, args: dict[str, Any]) -> Any:
        self._map(args, {})
        cursor = self.target
        while cursor.alive:
            try:
                return await cursor.next()
            except StopAsyncIteration:
                continue
        return None

    async def cursor_iterateOnce(self, args: dict[str, Any]) -> Any:
        self._map(args, {})
        return await self.target.try_next()

    async def cursor_close(self, args: dict[str, Any]) -> Any:
        self._map(args, {})
        await self.target.close()
        return None

    async def stream_iterateUntilDocumentOrError(self, args: dict[str, Any]) -> Any:
        self._map(args, {})
        return await self.target.next()

    stream_iterateOnce = cursor_iterateOnce
    stream_close = cursor_close


class _no_block:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


class FindCursor:
    """createFindCursor's entity: a find cursor whose find was sent (as the format says), its
    first document kept for the first iteration."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor
        self.first: Any = None

    @classmethod
    async def start(cls, cursor: Any) -> "FindCursor":
        entity = cls(cursor)
        try:
            entity.first = await cursor.next()
        except StopAsyncIteration:
            entity.first = None
        return entity

    @property
    def alive(self) -> bool:
        return self.first is not None or self.cursor.alive

    async def next(self) -> Any:
        if self.first is not None:
            first, self.first = self.first, None
            return first
        return await self.cursor.next()

    async def try_next(self) -> Any:
        if self.first is not None:
            first, self.first = self.first, None
            return first
        return await self.cursor.try_next()

    async def close(self) -> None:
        await self.cursor.close()


async def _aggregate(ops: Operations, target: Any, args: dict[str, Any]) -> Any:
    names = {"pipeline": "pipeline", "let": "let", "comment": "comment",
             "timeoutMode": "timeout_mode", "maxAwaitTimeMS": "maxAwaitTimeMS",
             # Extra command fields, as PyMongo takes them.
             "allowDiskUse": "allowDiskUse", "batchSize": "batchSize", "collation": "collation",
             "maxTimeMS": "maxTimeMS", "bypassDocumentValidation": "bypassDocumentValidation",
             "hint": "hint", "readConcern": "readConcern", "writeConcern": "writeConcern"}
    kw = ops._map(args, names, target.aggregate)
    # The aggregate command takes concerns as documents.
    if isinstance(kw.get("readConcern"), ReadConcern):
        kw["readConcern"] = kw["readConcern"].document
    if isinstance(kw.get("writeConcern"), WriteConcern):
        kw["writeConcern"] = kw["writeConcern"].document
    cursor = await target.aggregate(**kw)
    return await cursor.to_list()


# PyMongo's classes, to compare an API gap with.
_PYMONGO_CLASSES = {
    "AsyncMongoClient": pymongo.AsyncMongoClient,
    "AsyncDatabase": pymongo.asynchronous.database.AsyncDatabase,
    "AsyncCollection": pymongo.asynchronous.collection.AsyncCollection,
}


def _takes_extra_fields(method: Any) -> bool:
    """Whether a PyMongo-style method passes unknown keywords to the server as command fields."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


__all__ = [
    "Case", "Driver", "RunnerError", "ServerFacts", "SpecFailure", "SpecSkip", "SpecRun",
    "load_cases", "spec_folder",
]
