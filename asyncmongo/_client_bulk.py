"""AsyncMongoClient.bulk_write: PyMongo's client-level bulk write, over the ``bulkWrite`` command.

PyMongo's write models (``InsertOne(..., namespace="db.coll")``...) add themselves to a _ClientBulk,
which checks each as PyMongo does; then the operations go to admin in as few ``bulkWrite`` commands
as the server's limits allow, and the replies are merged into PyMongo's ClientBulkWriteResult, or its
ClientBulkWriteException carrying the partial result, the write errors and the write concern errors.
Nothing is sent before every model has been checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo import common
from pymongo.errors import (
    ClientBulkWriteException,
    ConfigurationError,
    DocumentTooLarge,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)
from pymongo.helpers_shared import _get_wce_doc
from pymongo.results import ClientBulkWriteResult, DeleteResult, InsertOneResult, UpdateResult
from pymongo.write_concern import WriteConcern

from asyncmongo import _core, _csot
from asyncmongo._common import MAX_STATEMENTS_SIZE as MAX_COMMAND_SIZE
from asyncmongo._common import encode as _encode
from asyncmongo._common import MAX_WRITE_BATCH_SIZE
from asyncmongo.client_session import check_session, run_in_session

if TYPE_CHECKING:
    from asyncmongo.client import AsyncMongoClient


# A bulkWrite goes to the server as one command document (libmongoc 1.23's command API has no OP_MSG
# document sequences), so a batch is bounded by the largest command the server takes, less room for
# the fields libmongoc adds (_common.MAX_STATEMENTS_SIZE).


class _ClientBulk:
    """The operations of one ``bulk_write``. PyMongo's models call ``add_insert`` / ``add_update``
    / ``add_replace`` / ``add_delete`` (``_add_to_client_bulk``); each is checked as PyMongo's
    client bulk checks it and kept as the server's operation document."""

    __slots__ = ("ops", "namespaces", "uses_collation", "uses_array_filters")

    def __init__(self) -> None:
        # (type, document): "insert"/"update"/"replace"/"delete" and the server's operation
        # document, whose first field names its type and the index of its namespace in the
        # command's nsInfo: set when its batch is made (a write error reports the document, as
        # PyMongo's do).
        self.ops: list[tuple[str, dict[str, Any]]] = []
        self.namespaces: list[str] = []
        self.uses_collation = False
        self.uses_array_filters = False

    def _add(self, kind: str, namespace: str, doc: dict[str, Any]) -> None:
        self.ops.append((kind, doc))
        self.namespaces.append(namespace)

    def add_insert(self, namespace: str, document: Any) -> None:
        common.validate_is_document_type("document", document)
        if not (isinstance(document, RawBSONDocument) or "_id" in document):
            document["_id"] = ObjectId()
        self._add("insert", namespace, {"insert": -1, "document": document})

    def _options(self, doc: dict[str, Any], upsert: Any, collation: Any, array_filters: Any,
                 hint: Any, sort: Any) -> dict[str, Any]:
        if upsert is not None:
            doc["upsert"] = upsert
        if array_filters is not None:
            self.uses_array_filters = True
            doc["arrayFilters"] = array_filters
        if hint is not None:
            doc["hint"] = hint
        if collation is not None:
            self.uses_collation = True
            doc["collation"] = collation
        if sort is not None:
            doc["sort"] = sort
        return doc

    def add_update(
        self,
        namespace: str,
        selector: Mapping[str, Any],
        update: Any,
        multi: bool,
        upsert: bool | None = None,
        collation: Any = None,
        array_filters: Any = None,
        hint: Any = None,
        sort: Any = None,
    ) -> None:
        common.validate_ok_for_update(update)
        doc = {"update": -1, "filter": selector, "updateMods": update, "multi": multi}
        self._add("update", namespace,
                  self._options(doc, upsert, collation, array_filters, hint, sort))

    def add_replace(
        self,
        namespace: str,
        selector: Mapping[str, Any],
        replacement: Any,
        upsert: bool | None = None,
        collation: Any = None,
        hint: Any = None,
        sort: Any = None,
    ) -> None:
        common.validate_ok_for_replace(replacement)
        doc = {"update": -1, "filter": selector, "updateMods": replacement, "multi": False}
        self._add("replace", namespace, self._options(doc, upsert, collation, None, hint, sort))

    def add_delete(
        self, namespace: str, selector: Mapping[str, Any], multi: bool, collation: Any = None,
        hint: Any = None,
    ) -> None:
        doc = {"delete": -1, "filter": selector, "multi": multi}
        self._add("delete", namespace, self._options(doc, None, collation, None, hint, None))


def _op_bytes(kind: str, ns_index: int, doc: dict[str, Any], codec_options: Any) -> bytes:
    doc["update" if kind == "replace" else kind] = ns_index
    return _encode(doc, False, codec_options)


def _array_entry_size(index: int, payload: int) -> int:
    return 1 + len(str(index)) + 1 + payload  # type byte, key, NUL, value


def _batches(
    bulk: _ClientBulk, header_size: int, codec_options: Any
) -> list[tuple[int, list[bytes], list[str]]]:
    """The operations cut into commands: (offset of the first operation, encoded operations,
    namespaces) each, at most MAX_WRITE_BATCH_SIZE operations and MAX_COMMAND_SIZE bytes."""
    # Two arrays: "ops" and "nsInfo" (type byte, name, NUL, length, terminating NUL).
    arrays = (1 + 4 + 4 + 1) + (1 + 7 + 4 + 1)
    out: list[tuple[int, list[bytes], list[str]]] = []
    i, total = 0, len(bulk.ops)
    while i < total:
        start = i
        ops: list[bytes] = []
        ns_index: dict[str, int] = {}
        size = header_size + arrays
        while i < total and len(ops) < MAX_WRITE_BATCH_SIZE:
            kind, doc = bulk.ops[i]
            ns = bulk.namespaces[i]
            new_ns = ns not in ns_index
            index = len(ns_index) if new_ns else ns_index[ns]
            raw = _op_bytes(kind, index, doc, codec_options)
            grow = _array_entry_size(len(ops), len(raw))
            if new_ns:
                grow += _array_entry_size(index, len(_encode({"ns": ns})))
            if size + grow > MAX_COMMAND_SIZE:
                if not ops:
                    raise DocumentTooLarge(
                        f"'{kind}' command document too large ({len(raw)} bytes): the largest "
                        f"this driver can send is {MAX_COMMAND_SIZE - header_size - arrays} bytes"
                    )
                break
            if new_ns:
                ns_index[ns] = index
            ops.append(raw)
            size += grow
            i += 1
        out.append((start, ops, list(ns_index)))
    return out


def _command(header: Mapping[str, Any], ops: list[bytes], namespaces: list[str]) -> bytes:
    cmd = dict(header)
    cmd["ops"] = [RawBSONDocument(raw) for raw in ops]
    cmd["nsInfo"] = [{"ns": ns} for ns in namespaces]
    return _encode(cmd)


async def client_bulk_write(
    client: "AsyncMongoClient",
    models: Sequence[Any],
    session: Any = None,
    ordered: bool = True,
    verbose_results: bool = False,
    bypass_document_validation: bool | None = None,
    comment: Any = None,
    let: Mapping[str, Any] | None = None,
    write_concern: WriteConcern | None = None,
) -> ClientBulkWriteResult:
    """``AsyncMongoClient.bulk_write`` (see its docstring)."""
    session = check_session(client, session)
    if session is not None and session.in_transaction:
        if write_concern:
            raise InvalidOperation("Cannot set write concern after starting a transaction")
    elif not write_concern:
        write_concern = client.write_concern
    if write_concern is not None and not isinstance(write_concern, WriteConcern):
        raise TypeError(
            f"write_concern must be an instance of pymongo.write_concern.WriteConcern, not "
            f"{type(write_concern)}"
        )
    unacknowledged = write_concern is not None and not write_concern.acknowledged
    if unacknowledged and session is not None:
        raise ConfigurationError(
            "Explicit sessions are incompatible with unacknowledged write concern: "
            f"{write_concern!r}"
        )
    if unacknowledged and verbose_results:
        raise InvalidOperation("Cannot request unacknowledged write concern and verbose results")
    if unacknowledged and ordered:
        raise InvalidOperation("Cannot request unacknowledged write concern and ordered writes")
    common.validate_list("models", models)
    if let is not None:
        common.validate_is_document_type("let", let)
    bulk = _ClientBulk()
    for model in models:
        try:
            model._add_to_client_bulk(bulk)
        except AttributeError:
            raise TypeError(f"{model!r} is not a valid request") from None
    if not bulk.ops:
        raise InvalidOperation("No operations to execute")
    if unacknowledged:
        if bulk.uses_collation:
            raise ConfigurationError("Collation is unsupported for unacknowledged writes.")
        if bulk.uses_array_filters:
            raise ConfigurationError("arrayFilters is unsupported for unacknowledged writes.")
        if bypass_document_validation is not None:
            raise OperationFailure(
                "Cannot set bypass_document_validation with unacknowledged write concern"
            )

    header: dict[str, Any] = {
        "bulkWrite": 1,
        "errorsOnly": True if unacknowledged else not verbose_results,
        "ordered": False if unacknowledged else ordered,
    }
    if bypass_document_validation is not None:
        header["bypassDocumentValidation"] = bypass_document_validation
    if comment:
        header["comment"] = comment
    if let:
        header["let"] = let
    # The write concern travels in the job's options, where libmongoc takes it (none in a
    # transaction, whose own applies; without options libmongoc applies the client's).
    opts = None
    if write_concern is not None and write_concern is not client.write_concern and not (
        session is not None and session.in_transaction
    ):
        opts = _encode({"writeConcern": _csot.write_concern_doc(write_concern)})
    elif write_concern is not None and not (session is not None and session.in_transaction):
        opts = _csot.write_opts(write_concern, None)  # under a timeout, no wtimeout
    codec_options = client.codec_options
    reply_codec = codec_options.with_options(document_class=dict)
    batches = _batches(bulk, len(_encode(header)), codec_options)

    run = _Execution(client, session, bulk, ordered, verbose_results, reply_codec)
    for offset, ops, namespaces in batches:
        cmd = _command(header, ops, namespaces)
        if unacknowledged:
            try:
                await run.submit(cmd, opts)
            except PyMongoError:
                pass  # the server's verdict on an unacknowledged write is not reported
            continue
        if not await run.batch(offset, len(ops), cmd, opts):
            break
    if unacknowledged:
        return ClientBulkWriteResult(None, False, False)  # type: ignore[arg-type]
    full = run.full
    if full["error"] is not None or full["writeErrors"] or full["writeConcernErrors"]:
        full["writeErrors"].sort(key=lambda e: e["idx"])
        raise ClientBulkWriteException(full, verbose_results) from full["error"]
    return ClientBulkWriteResult(full, True, verbose_results)


class _Execution:
    """Runs the batches and merges their replies into PyMongo's full result document."""

    def __init__(self, client: Any, session: Any, bulk: _ClientBulk, ordered: bool,
                 verbose: bool, codec: Any) -> None:
        self.core = client._core
        self.session = session
        self.bulk = bulk
        self.ordered = ordered
        self.verbose = verbose
        self.codec = codec
        self.full: dict[str, Any] = {
            "anySuccessful": False,
            "error": None,
            "writeErrors": [],
            "writeConcernErrors": [],
            "nInserted": 0,
            "nUpserted": 0,
            "nMatched": 0,
            "nModified": 0,
            "nDeleted": 0,
            "insertResults": {},
            "updateResults": {},
            "deleteResults": {},
        }

    async def submit(self, cmd: bytes, opts: bytes | None) -> Any:
        return await run_in_session(self.core, self.session, _core.OP_WRITE, _core.RES_DOC,
                                    "admin", None, cmd, opts, self.codec)

    async def batch(self, offset: int, count: int, cmd: bytes, opts: bytes | None) -> bool:
        """Run one command and merge its outcome; False when the bulk must stop here."""
        full = self.full
        try:
            reply = await self.submit(cmd, opts)
        except WriteConcernError as exc:
            # libmongoc fails a command whose reply has a writeConcernError; the writes were done
            # and the reply (the details) still holds their results.
            reply = exc.details
            if not isinstance(reply, Mapping) or "writeConcernError" not in reply:
                full["error"] = exc
                return False
        except ServerSelectionTimeoutError as exc:
            if offset == 0:
                raise  # nothing was sent: as PyMongo, not a bulk write error
            full["error"] = exc
            return False
        except PyMongoError as exc:
            # A top-level error (the command failed, the connection broke): PyMongo embeds it in
            # ClientBulkWriteException with what the batches before it did.
            full["error"] = exc
            return False
        try:
            first_error = await self._results(offset, reply)
        except PyMongoError as exc:
            full["error"] = exc
            first_error = None
        # Whether a write of this batch is known to have succeeded (the bulk write spec's rule;
        # PyMongo 4.20 reads "nErrors < count" for ordered bulks too, where the server stops at
        # the first error: a failed first operation then looked like a success).
        n_errors = reply.get("nErrors", 0)
        if n_errors == 0 or (n_errors < count if not self.ordered else
                             first_error is not None and first_error > 0):
            full["anySuccessful"] = True
        for name, key in (("nInserted", "nInserted"), ("nUpserted", "nUpserted"),
                          ("nMatched", "nMatched"), ("nModified", "nModified"),
                          ("nDeleted", "nDeleted")):
            full[name] += reply.get(key, 0)
        wce = _get_wce_doc(reply)
        if wce:
            full["writeConcernErrors"].append(wce)
        if full["error"] is not None:
            return False
        return not (self.ordered and full["writeErrors"])

    async def _results(self, offset: int, reply: Mapping[str, Any]) -> int | None:
        """Each operation's result or error, from the reply's cursor (and its getMores); returns
        the batch index of the first failed operation, if any."""
        cursor = reply.get("cursor") or {}
        docs = list(cursor.get("firstBatch") or ())
        cursor_id = cursor.get("id", 0)
        ns = cursor.get("ns") or "admin.$cmd.bulkWrite"
        first_error: int | None = None
        while True:
            for doc in docs:
                if not doc.get("ok") and (first_error is None or doc["idx"] < first_error):
                    first_error = doc["idx"]
                self._result(offset, doc)
            if not cursor_id:
                return first_error
            # To the primary, as the bulkWrite went. In an explicit session, the same session;
            # without one, libmongoc gives this command an implicit session of its own, which a
            # server that binds the cursor to the bulkWrite's implicit session refuses (the core
            # has no result kind returning a whole reply with its session).
            more: dict[str, Any] = {"getMore": Int64(cursor_id), "collection": ns.split(".", 1)[1]}
            got = await run_in_session(self.core, self.session, _core.OP_COMMAND, _core.RES_DOC,
                                       "admin", None, _encode(more), None, self.codec, 0, 0, None,
                                       _csot.UNBOUNDED)
            cursor = got.get("cursor") or {}
            docs = list(cursor.get("nextBatch") or ())
            cursor_id = cursor.get("id", 0)

    def _result(self, offset: int, doc: Mapping[str, Any]) -> None:
        index = doc["idx"] + offset
        kind, op = self.bulk.ops[index]
        full = self.full
        if not doc.get("ok"):
            error = dict(doc)
            error["idx"] = index
            error["op"] = op
            full["writeErrors"].append(error)
            return
        if not self.verbose:
            return
        if kind == "insert":
            full["insertResults"][index] = InsertOneResult(op["document"].get("_id"), True)
        elif kind == "delete":
            full["deleteResults"][index] = DeleteResult(doc, True)
        else:
            full["updateResults"][index] = UpdateResult(doc, True, in_client_bulk=True)


__all__ = ["client_bulk_write"]
