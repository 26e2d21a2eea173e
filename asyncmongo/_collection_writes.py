"""Writes of AsyncCollection: update, replace, delete, bulk_write, find_one_and_*.

Arguments are checked as PyMongo checks them (same exception types) before anything is sent; the
results are PyMongo's result classes holding the documents PyMongo would hold (``raw_result``,
``bulk_api_result``, ``BulkWriteError.details``), so code reading them works unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping as AbcMapping
from typing import Any, Iterable, Mapping, Sequence

import bson
from bson.raw_bson import RawBSONDocument
from bson.objectid import ObjectId
from pymongo import common, helpers_shared
from pymongo.collation import validate_collation_or_none
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    InvalidOperation,
    OperationFailure,
    WriteConcernError,
    WriteError,
    DuplicateKeyError,
    WTimeoutError,
)
from pymongo.results import BulkWriteResult, DeleteResult, UpdateResult
from pymongo.write_concern import WriteConcern

from asyncmongo import _core
from asyncmongo.client_session import check_session, run_in_session

_encode = bson.encode
_validate_boolean = common.validate_boolean
_validate_is_mapping = common.validate_is_mapping
_index_document = helpers_shared._index_document

_OP_WRITE = _core.OP_WRITE
_OP_READ_WRITE = _core.OP_READ_WRITE
_OP_BULK = _core.OP_BULK
_RES_WRITE = _core.RES_WRITE
_RES_BULK = _core.RES_BULK
_RES_DOC = _core.RES_DOC

# The core's bulk operation codes (see _core.pyi / the design notes).
_B_INSERT, _B_UPDATE_ONE, _B_UPDATE_MANY, _B_REPLACE_ONE, _B_DELETE_ONE, _B_DELETE_MANY = range(6)
# PyMongo's kinds of write command: an unordered bulk runs all inserts, then all updates, then all
# deletes (pymongo.bulk_shared.gen_unordered); ours must run in the same order to end in the same
# state, so it is regrouped before being handed to libmongoc, which keeps the given order.
_K_INSERT, _K_UPDATE, _K_DELETE = 0, 1, 2

# {"op": 0, "d": <document>} built around an already encoded document, so its _id stays first.
_INSERT_SPEC_HEAD = b"\x10op\x00\x00\x00\x00\x00\x03d\x00"
_INSERT_SPEC_EXTRA = 4 + len(_INSERT_SPEC_HEAD) + 1
_pack_int = struct.Struct("<i").pack

_UNACK_COLLATION = "Collation is unsupported for unacknowledged writes."
_UNACK_ARRAY_FILTERS = "arrayFilters is unsupported for unacknowledged writes."


def _check_size(cmd: bytes) -> bytes:
    # collection.py imports this module before it defines the check: look it up when first used.
    from asyncmongo.collection import check_command_size

    return check_command_size(cmd)


def _is_update_document(document: Any) -> bool:
    """An update (operators, or a pipeline) rather than a replacement document."""
    if isinstance(document, list):
        return True
    return bool(document) and next(iter(document)).startswith("$")


def _hint_value(hint: Any) -> Any:
    return hint if isinstance(hint, str) else _index_document(hint)


def write_concern_error(wce: Mapping[str, Any], labels: Any = None) -> WriteConcernError:
    """PyMongo's exception for a ``writeConcernError`` document (labels copied in, as PyMongo)."""
    if labels:
        wce = dict(wce)
        wce["errorLabels"] = labels
    info = wce.get("errInfo")
    timeout = wce.get("code") == 50 or (isinstance(info, AbcMapping) and info.get("wtimeout"))
    cls = WTimeoutError if timeout else WriteConcernError
    return cls(wce.get("errmsg"), wce.get("code"), wce)


def bulk_api_result(
    reply: Mapping[str, Any], ops: Sequence[Any], order: Sequence[int] | None = None
) -> dict[str, Any]:
    """PyMongo's ``bulk_api_result`` / ``BulkWriteError.details`` from libmongoc's bulk reply.

    ``ops`` are PyMongo's operation documents in request order (for an insert, the document): each
    write error carries its failed operation as ``op``, as PyMongo's do. ``order[i]`` is the request
    index of the i-th operation sent (an unordered bulk is regrouped by kind); indexes in the result
    are request indexes, write errors sorted by them.
    """
    def index(i: int) -> int:
        return order[i] if order is not None else i

    errors = []
    for err in reply.get("writeErrors") or ():
        err = dict(err)
        i = index(err["index"])
        err["index"] = i
        err["op"] = ops[i]
        errors.append(err)
    errors.sort(key=lambda e: e["index"])
    return {
        "writeErrors": errors,
        "writeConcernErrors": list(reply.get("writeConcernErrors") or ()),
        "nInserted": reply.get("nInserted", 0),
        "nUpserted": reply.get("nUpserted", 0),
        "nMatched": reply.get("nMatched", 0),
        "nModified": reply.get("nModified", 0),
        "nRemoved": reply.get("nRemoved", 0),
        "upserted": [
            {"index": index(u["index"]), "_id": u["_id"]} for u in reply.get("upserted") or ()
        ],
    }


# The write command of each kind of bulk operation, and the field of its statements.
_COMMANDS = {_K_INSERT: ("insert", "documents"), _K_UPDATE: ("update", "updates"),
             _K_DELETE: ("delete", "deletes")}


def _merge_reply(
    full: dict[str, Any], kind: int, reply: Mapping[str, Any], indexes: list[int],
    ops: Sequence[Any],
) -> None:
    """Add one write command's reply to a bulk_api_result (its statement j is request
    indexes[j]), as PyMongo merges its write commands' replies."""
    n = reply.get("n", 0)
    if kind == _K_INSERT:
        full["nInserted"] += n
    elif kind == _K_DELETE:
        full["nRemoved"] += n
    else:
        upserted = reply.get("upserted") or []
        full["nUpserted"] += len(upserted)
        full["nMatched"] += n - len(upserted)
        full["nModified"] += reply.get("nModified", 0)
        full["upserted"].extend(
            {"index": indexes[u["index"]], "_id": u["_id"]} for u in upserted
        )
    for err in reply.get("writeErrors") or ():
        err = dict(err)
        err["index"] = indexes[err["index"]]
        err["op"] = ops[err["index"]]
        full["writeErrors"].append(err)
    wce = helpers_shared._get_wce_doc(reply)
    if wce:
        full["writeConcernErrors"].append(wce)


class _BulkBuilder:
    """Collects the operations of a ``bulk_write``.

    PyMongo's operation classes (``pymongo.InsertOne`` ...) add themselves to a bulk by calling
    ``add_insert`` / ``add_update`` / ``add_replace`` / ``add_delete`` (``_add_to_bulk``): this
    class takes those calls, checks each operation as PyMongo's bulk does and encodes it for the
    core.
    """

    __slots__ = (
        "coll", "ops", "kinds", "specs", "uses_collation", "uses_array_filters", "uses_sort"
    )

    def __init__(self, coll: Any) -> None:
        self.coll = coll
        self.ops: list[Any] = []  # PyMongo's operation documents: error details name them
        self.kinds: list[int] = []
        self.specs: list[bytes] = []
        self.uses_collation = False
        self.uses_array_filters = False
        self.uses_sort = False

    def _add(self, kind: int, op: Any, spec: Mapping[str, Any] | bytes) -> None:
        if not isinstance(spec, bytes):
            spec = _check_size(_encode(spec, False, self.coll._codec_options))
        self.ops.append(op)
        self.kinds.append(kind)
        self.specs.append(spec)

    def add_insert(self, document: Any) -> None:
        common.validate_is_document_type("document", document)
        if not (isinstance(document, RawBSONDocument) or "_id" in document):
            document["_id"] = ObjectId()
        raw = self.coll._encode_document(document)
        spec = b"".join((_pack_int(len(raw) + _INSERT_SPEC_EXTRA), _INSERT_SPEC_HEAD, raw, b"\x00"))
        self._add(_K_INSERT, document, spec)

    def _options(self, upsert: Any, collation: Any, hint: Any) -> dict[str, Any]:
        # Keys are left to the server as PyMongo does ("validate": False: no libmongoc key checks).
        o: dict[str, Any] = {"validate": False}
        if upsert is not None:
            o["upsert"] = upsert
        if collation is not None:
            self.uses_collation = True
            o["collation"] = collation
        if hint is not None:
            o["hint"] = hint
        return o

    def add_update(
        self,
        selector: Any,
        update: Any,
        multi: bool,
        upsert: bool | None,
        collation: Any = None,
        array_filters: Any = None,
        hint: Any = None,
        sort: Any = None,
    ) -> None:
        common.validate_ok_for_update(update)
        op: dict[str, Any] = {"q": selector, "u": update, "multi": multi}
        if upsert is not None:
            op["upsert"] = upsert
        if collation is not None:
            op["collation"] = collation
        if array_filters is not None:
            op["arrayFilters"] = array_filters
        if hint is not None:
            op["hint"] = hint
        if sort is not None:
            self.uses_sort = True
            op["sort"] = sort
        o = self._options(upsert, collation, hint)
        if array_filters is not None:
            self.uses_array_filters = True
            o["arrayFilters"] = array_filters
        code = _B_UPDATE_MANY if multi else _B_UPDATE_ONE
        self._add(_K_UPDATE, op, {"op": code, "d": selector, "u": update, "o": o})

    def add_replace(
        self,
        selector: Any,
        replacement: Any,
        upsert: bool | None,
        collation: Any = None,
        hint: Any = None,
        sort: Any = None,
    ) -> None:
        common.validate_ok_for_replace(replacement)
        op: dict[str, Any] = {"q": selector, "u": replacement}
        if upsert is not None:
            op["upsert"] = upsert
        if collation is not None:
            op["collation"] = collation
        if hint is not None:
            op["hint"] = hint
        if sort is not None:
            self.uses_sort = True
            op["sort"] = sort
        o = self._options(upsert, collation, hint)
        self._add(_K_UPDATE, op, {"op": _B_REPLACE_ONE, "d": selector, "u": replacement, "o": o})

    def add_delete(
        self, selector: Any, limit: int, collation: Any = None, hint: Any = None
    ) -> None:
        op: dict[str, Any] = {"q": selector, "limit": limit}
        if collation is not None:
            op["collation"] = collation
        if hint is not None:
            op["hint"] = hint
        o = self._options(None, collation, hint)
        del o["validate"]  # not an option of libmongoc's deletes
        code = _B_DELETE_ONE if limit == 1 else _B_DELETE_MANY
        self._add(_K_DELETE, op, {"op": code, "d": selector, "o": o})


class _WritesMixin:
    __slots__ = ()

    # ---- update / replace ------------------------------------------------------------------

    async def _await_write(self, session: Any, *job: Any) -> Any:
        """Run the write job (core.submit's arguments), in ``session`` if given: its reply, or
        None for an unacknowledged write, whose outcome the server does not report (with w=0
        PyMongo never sees the server's verdict either)."""
        core = self._client._core
        if self._acknowledged:
            return await run_in_session(core, session, *job)
        try:
            await run_in_session(core, session, *job)
        except OperationFailure:
            pass
        return None

    async def _write_command(self, cmd: dict[str, Any], session: Any) -> Any:
        """Run a multi-document update/delete command (not retryable, as PyMongo's are not)."""
        raw = _check_size(_encode(cmd, False, self._codec_options))
        return await self._await_write(
            session, _OP_WRITE, _RES_WRITE, self._db_name, None, raw, self._write_opts, None
        )

    async def _single_write(
        self, kind: int, spec: dict[str, Any], let: Any, comment: Any, bypass: bool | None,
        session: Any,
    ) -> Any:
        """One single-document update/replace/delete as a one-operation libmongoc bulk: unlike the
        update/delete command path, libmongoc 1.23 makes it a retryable write (txnNumber), as
        PyMongo's are. Write errors raise WriteError/DuplicateKeyError and write concern errors
        WriteConcernError (RES_WRITE); returns libmongoc's bulk counts, or None when unacknowledged."""
        opts: dict[str, Any] = {"ordered": True}
        if self._write_opts is not None:
            opts["writeConcern"] = self._write_concern.document
        if let is not None:
            opts["let"] = let
        if comment is not None:
            opts["comment"] = comment
        raw = _check_size(_encode(dict(spec, op=kind), False, self._codec_options))
        return await self._await_write(
            session, _OP_BULK, _RES_WRITE, self._db_name, self._name, raw, _encode(opts), None,
            _core.FLAG_BYPASS if bypass else 0,
        )

    async def _update(
        self,
        filter: Any,
        document: Any,
        upsert: bool,
        multi: bool,
        bypass_document_validation: bool | None,
        collation: Any,
        array_filters: Any,
        hint: Any,
        let: Any,
        sort: Any,
        comment: Any,
        session: Any = None,
    ) -> UpdateResult:
        _validate_boolean("upsert", upsert)
        collation = validate_collation_or_none(collation)
        acknowledged = self._acknowledged
        spec: dict[str, Any] = {"q": filter, "u": document, "multi": multi, "upsert": upsert}
        if collation is not None:
            if not acknowledged:
                raise ConfigurationError(_UNACK_COLLATION)
            spec["collation"] = collation
        if array_filters is not None:
            if not acknowledged:
                raise ConfigurationError(_UNACK_ARRAY_FILTERS)
            spec["arrayFilters"] = array_filters
        if hint is not None:
            spec["hint"] = _hint_value(hint)
        if sort is not None:
            _validate_is_mapping("sort", sort)
            spec["sort"] = sort
        if not multi and sort is None and bypass_document_validation is not False:
            # Retryable: see _single_write. (libmongoc's bulk API takes no per-update sort.)
            opts = {k: v for k, v in spec.items() if k in ("upsert", "collation", "arrayFilters", "hint")}
            opts["validate"] = False  # the server judges the document, as with PyMongo
            if let is not None:
                _validate_is_mapping("let", let)
            counts = await self._single_write(
                3 if not _is_update_document(document) else 1,
                {"d": filter, "u": document, "o": opts}, let, comment, bypass_document_validation,
                session,
            )
            if counts is None:
                return UpdateResult(None, False)
            # PyMongo's raw_result, from libmongoc's bulk counts.
            upserted = counts.get("upserted") or []
            result: dict[str, Any] = {
                "n": counts.get("nMatched", 0) + counts.get("nUpserted", 0),
                "nModified": counts.get("nModified", 0),
                "ok": 1.0,
                "updatedExisting": bool(counts.get("nMatched")) and not upserted,
            }
            if upserted:
                result["upserted"] = upserted[0]["_id"]
            return UpdateResult(result, True)
        cmd: dict[str, Any] = {"update": self._name, "ordered": True, "updates": [spec]}
        if let is not None:
            _validate_is_mapping("let", let)
            cmd["let"] = let
        if comment is not None:
            cmd["comment"] = comment
        if bypass_document_validation is not None:
            cmd["bypassDocumentValidation"] = bypass_document_validation
        reply = await self._write_command(cmd, session)
        if reply is None:
            return UpdateResult(None, False)
        # PyMongo's raw_result: the reply, with updatedExisting and the upserted _id alone.
        result = dict(reply)
        if result.get("n") and "upserted" not in result:
            result["updatedExisting"] = True
        else:
            result["updatedExisting"] = False
            if "upserted" in result:
                result["upserted"] = result["upserted"][0]["_id"]
        return UpdateResult(result, True)

    async def replace_one(
        self,
        filter: Mapping[str, Any],
        replacement: Mapping[str, Any],
        upsert: bool = False,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        hint: Any = None,
        session: Any = None,
        let: Mapping[str, Any] | None = None,
        sort: Mapping[str, Any] | None = None,
        comment: Any = None,
    ) -> UpdateResult:
        session = self._write_session(session)
        _validate_is_mapping("filter", filter)
        common.validate_ok_for_replace(replacement)
        if let is not None:
            _validate_is_mapping("let", let)
        return await self._update(
            filter, replacement, upsert, False, bypass_document_validation, collation, None, hint,
            let, sort, comment, session,
        )

    async def update_one(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        upsert: bool = False,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
        hint: Any = None,
        session: Any = None,
        let: Mapping[str, Any] | None = None,
        sort: Mapping[str, Any] | None = None,
        comment: Any = None,
    ) -> UpdateResult:
        session = self._write_session(session)
        _validate_is_mapping("filter", filter)
        common.validate_ok_for_update(update)
        common.validate_list_or_none("array_filters", array_filters)
        return await self._update(
            filter, update, upsert, False, bypass_document_validation, collation, array_filters,
            hint, let, sort, comment, session,
        )

    async def update_many(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        upsert: bool = False,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        hint: Any = None,
        session: Any = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
    ) -> UpdateResult:
        session = self._write_session(session)
        _validate_is_mapping("filter", filter)
        common.validate_ok_for_update(update)
        common.validate_list_or_none("array_filters", array_filters)
        return await self._update(
            filter, update, upsert, True, bypass_document_validation, collation, array_filters,
            hint, let, None, comment, session,
        )

    # ---- delete ----------------------------------------------------------------------------

    async def _delete(
        self, filter: Any, multi: bool, collation: Any, hint: Any, let: Any, comment: Any,
        session: Any = None,
    ) -> DeleteResult:
        _validate_is_mapping("filter", filter)
        spec: dict[str, Any] = {"q": filter, "limit": 0 if multi else 1}
        collation = validate_collation_or_none(collation)
        if collation is not None:
            if not self._acknowledged:
                raise ConfigurationError(_UNACK_COLLATION)
            spec["collation"] = collation
        if hint is not None:
            spec["hint"] = _hint_value(hint)
        if not multi:
            if let is not None:
                common.validate_is_document_type("let", let)
            opts = {k: v for k, v in spec.items() if k in ("collation", "hint")}
            counts = await self._single_write(4, {"d": filter, "o": opts}, let, comment, None,
                                              session)
            if counts is None:
                return DeleteResult({"ok": 1}, False)
            return DeleteResult({"n": counts.get("nRemoved", 0), "ok": 1.0}, True)
        cmd: dict[str, Any] = {"delete": self._name, "ordered": True, "deletes": [spec]}
        if let is not None:
            common.validate_is_document_type("let", let)
            cmd["let"] = let
        if comment is not None:
            cmd["comment"] = comment
        reply = await self._write_command(cmd, session)
        if reply is None:
            # PyMongo's unacknowledged command reply.
            return DeleteResult({"ok": 1}, False)
        return DeleteResult(reply, True)

    async def delete_one(
        self,
        filter: Mapping[str, Any],
        collation: Any = None,
        hint: Any = None,
        session: Any = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
    ) -> DeleteResult:
        session = self._write_session(session)
        return await self._delete(filter, False, collation, hint, let, comment, session)

    async def delete_many(
        self,
        filter: Mapping[str, Any],
        collation: Any = None,
        hint: Any = None,
        session: Any = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
    ) -> DeleteResult:
        session = self._write_session(session)
        return await self._delete(filter, True, collation, hint, let, comment, session)

    # ---- bulk_write ------------------------------------------------------------------------

    async def bulk_write(
        self,
        requests: Sequence[Any],
        ordered: bool = True,
        bypass_document_validation: bool | None = None,
        session: Any = None,
        comment: Any = None,
        let: Mapping[str, Any] | None = None,
    ) -> BulkWriteResult:
        common.validate_list("requests", requests)
        if let is not None:
            common.validate_is_document_type("let", let)
        bulk = _BulkBuilder(self)
        for request in requests:
            try:
                request._add_to_bulk(bulk)
            except AttributeError:
                raise TypeError(f"{request!r} is not a valid request") from None
        session = self._write_session(session)
        if not bulk.ops:
            raise InvalidOperation("No operations to execute")
        acknowledged = self._acknowledged
        if not acknowledged:
            if bulk.uses_collation:
                raise ConfigurationError(_UNACK_COLLATION)
            if bulk.uses_array_filters:
                raise ConfigurationError(_UNACK_ARRAY_FILTERS)
            if bypass_document_validation:
                raise OperationFailure(
                    "Cannot set bypass_document_validation with unacknowledged write concern"
                )
        if bulk.uses_sort or bypass_document_validation is False:
            # libmongoc 1.23's bulk API sends neither (it answers "Invalid option" to a sort, and
            # leaves an explicit bypassDocumentValidation=false out): write commands of our own.
            try:
                full = await self._bulk_by_commands(
                    bulk, ordered, bypass_document_validation, comment, let, session
                )
            except OperationFailure:
                if not acknowledged:
                    return BulkWriteResult({}, False)
                raise
            if not acknowledged:
                return BulkWriteResult({}, False)
            if full["writeErrors"] or full["writeConcernErrors"]:
                full["writeErrors"].sort(key=lambda e: e["index"])
                raise BulkWriteError(full)
            return BulkWriteResult(full, True)
        kinds = bulk.kinds
        if ordered:
            order = None
            specs = bulk.specs
        else:
            order = sorted(range(len(kinds)), key=kinds.__getitem__)  # stable: inserts first
            specs = [bulk.specs[i] for i in order]
        opts: dict[str, Any] = {"ordered": bool(ordered)}
        if self._write_opts is not None:
            opts["writeConcern"] = self._write_concern.document
        if let is not None:
            opts["let"] = let
        if comment:
            opts["comment"] = comment
        flags = _core.FLAG_BYPASS if bypass_document_validation else 0
        try:
            reply = await run_in_session(
                self._client._core, session, _OP_BULK, _RES_BULK, self._db_name, self._name,
                b"".join(specs), _encode(opts), None, flags,
            )
        except BulkWriteError as exc:
            if not acknowledged:
                return BulkWriteResult({}, False)
            raise BulkWriteError(bulk_api_result(exc.details, bulk.ops, order)) from None
        except OperationFailure:
            if not acknowledged:
                return BulkWriteResult({}, False)
            raise
        if not acknowledged:
            return BulkWriteResult({}, False)
        return BulkWriteResult(bulk_api_result(reply, bulk.ops, order), True)

    async def _bulk_by_commands(
        self, bulk: _BulkBuilder, ordered: bool, bypass: bool | None, comment: Any, let: Any,
        session: Any,
    ) -> dict[str, Any]:
        """Run a bulk as insert/update/delete commands, batched as PyMongo batches them (ordered:
        runs of one kind in the given order, stopping at the first write error; unordered: all
        inserts, then updates, then deletes) and cut to the server's limits. Returns PyMongo's
        bulk_api_result. These commands are not retried: libmongoc retries its bulk API's writes
        only."""
        from asyncmongo._client_bulk import MAX_COMMAND_SIZE, MAX_WRITE_BATCH_SIZE

        kinds = bulk.kinds
        runs: list[tuple[int, list[int]]] = []
        if ordered:
            for i, kind in enumerate(kinds):
                if runs and runs[-1][0] == kind:
                    runs[-1][1].append(i)
                else:
                    runs.append((kind, [i]))
        else:
            for kind in (_K_INSERT, _K_UPDATE, _K_DELETE):
                indexes = [i for i, k in enumerate(kinds) if k == kind]
                if indexes:
                    runs.append((kind, indexes))
        full: dict[str, Any] = {
            "writeErrors": [], "writeConcernErrors": [], "nInserted": 0, "nUpserted": 0,
            "nMatched": 0, "nModified": 0, "nRemoved": 0, "upserted": [],
        }
        codec = self._codec_options
        for kind, indexes in runs:
            name, field = _COMMANDS[kind]
            head: dict[str, Any] = {name: self._name, "ordered": ordered}
            if comment:
                head["comment"] = comment
            if bypass is not None:
                head["bypassDocumentValidation"] = bypass
            if let is not None and kind != _K_INSERT:
                head["let"] = let
            # The statements' array: type byte, name, NUL, length, terminating NUL.
            base = len(_encode(head, False, codec)) + len(field) + 7
            start = 0
            while start < len(indexes):
                size, batch = base, []
                for i in indexes[start:start + MAX_WRITE_BATCH_SIZE]:
                    stmt = _encode(bulk.ops[i], False, codec)
                    grow = 2 + len(str(len(batch))) + len(stmt)
                    if batch and size + grow > MAX_COMMAND_SIZE:
                        break
                    batch.append(RawBSONDocument(stmt))
                    size += grow
                cmd = dict(head)
                cmd[field] = batch
                raw = _check_size(_encode(cmd, False, codec))  # a statement alone too large
                try:
                    reply = await run_in_session(
                        self._client._core, session, _OP_WRITE, _RES_DOC, self._db_name, None,
                        raw, self._write_opts, None,
                    )
                except WriteConcernError as exc:
                    # libmongoc fails a reply with a writeConcernError; the writes were done.
                    reply = exc.details
                    if not isinstance(reply, AbcMapping) or "writeConcernError" not in reply:
                        raise
                _merge_reply(full, kind, reply, [indexes[start + j] for j in range(len(batch))],
                             bulk.ops)
                start += len(batch)
                if ordered and full["writeErrors"]:
                    return full
        return full

    async def _insert_by_commands(
        self, documents: list[Any], ordered: bool, comment: Any, session: Any, single: bool = False
    ) -> None:
        """insert_one / insert_many with bypass_document_validation=False, which libmongoc's bulk
        API leaves out of the command: insert commands of our own. Raises what PyMongo raises
        (insert_one: WriteError, DuplicateKeyError, WriteConcernError; insert_many:
        BulkWriteError)."""
        bulk = _BulkBuilder(self)
        for document in documents:
            bulk.add_insert(document)
        try:
            full = await self._bulk_by_commands(bulk, ordered, False, comment, None, session)
        except OperationFailure:
            if self._acknowledged:
                raise
            return
        if not self._acknowledged:
            return
        errors, wces = full["writeErrors"], full["writeConcernErrors"]
        if single:
            if errors:
                err = dict(errors[0])
                err.pop("op", None)
                code = err.get("code")
                cls = DuplicateKeyError if code in (11000, 11001, 12582) else WriteError
                raise cls(err.get("errmsg"), code, err)
            if wces:
                raise write_concern_error(wces[-1])
        elif errors or wces:
            errors.sort(key=lambda e: e["index"])
            raise BulkWriteError(full)

    # ---- find_one_and_* --------------------------------------------------------------------

    async def _find_and_modify(
        self,
        filter: Any,
        projection: Any,
        sort: Any,
        upsert: bool | None = None,
        return_document: bool = False,
        array_filters: Any = None,
        hint: Any = None,
        session: Any = None,
        let: Any = None,
        **kwargs: Any,
    ) -> Any:
        session = check_session(self._client, session)
        _validate_is_mapping("filter", filter)
        if not isinstance(return_document, bool):
            raise TypeError(
                "return_document must be ReturnDocument.BEFORE or ReturnDocument.AFTER, "
                f"not {type(return_document)}"
            )
        collation = validate_collation_or_none(kwargs.pop("collation", None))
        if hint is not None:
            hint = _hint_value(hint)
        # A writeConcern among the extra arguments is the operation's (as PyMongo): libmongoc takes
        # it from the options, where it must be alone.
        raw_wc = kwargs.pop("writeConcern", None)
        if raw_wc is not None:
            write_concern = WriteConcern(**raw_wc)
            opts = _encode({"writeConcern": write_concern.document})
        else:
            write_concern = self._write_concern
            opts = self._write_opts
        acknowledged = write_concern.acknowledged
        cmd: dict[str, Any] = {"findAndModify": self._name, "query": filter, "new": return_document}
        if let is not None:
            _validate_is_mapping("let", let)
            cmd["let"] = let
        cmd.update(kwargs)
        if projection is not None:
            cmd["fields"] = helpers_shared._fields_list_to_dict(projection, "projection")
        if sort is not None:
            cmd["sort"] = _index_document(sort)
        if upsert is not None:
            _validate_boolean("upsert", upsert)
            cmd["upsert"] = upsert
        if array_filters is not None:
            if not acknowledged:
                raise ConfigurationError(_UNACK_ARRAY_FILTERS)
            cmd["arrayFilters"] = list(array_filters)
        if hint is not None:
            cmd["hint"] = hint
        if collation is not None:
            if not acknowledged:
                raise ConfigurationError(_UNACK_COLLATION)
            cmd["collation"] = collation
        raw = _check_size(_encode(cmd, False, self._codec_options))
        if session is not None and not acknowledged:
            raise ConfigurationError(
                f"Explicit sessions are incompatible with unacknowledged write concern: "
                f"{write_concern!r}"
            )
        try:
            reply = await run_in_session(
                self._client._core, session, _OP_READ_WRITE, _RES_DOC, self._db_name, None, raw,
                opts, self._codec_options,
            )
        except OperationFailure as exc:
            if not acknowledged:
                return None  # PyMongo does not read the reply of an unacknowledged command
            details = exc.details
            if (
                isinstance(exc, WriteConcernError)
                and isinstance(details, AbcMapping)
                and details.get("writeConcernError")
            ):
                # libmongoc reports the reply's writeConcernError as a failure: raise PyMongo's.
                raise write_concern_error(
                    details["writeConcernError"], details.get("errorLabels")
                ) from None
            raise
        if not acknowledged:
            return None
        errors = reply.get("writeErrors")
        if errors:
            err = errors[-1]
            cls = DuplicateKeyError if err.get("code") == 11000 else WriteError
            raise cls(err.get("errmsg"), err.get("code"), err)
        wce = reply.get("writeConcernError")
        if wce:
            raise write_concern_error(wce, reply.get("errorLabels"))
        return reply.get("value")

    async def find_one_and_delete(
        self,
        filter: Mapping[str, Any],
        projection: Mapping[str, Any] | Iterable[str] | None = None,
        sort: Any = None,
        hint: Any = None,
        session: Any = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Any:
        kwargs["remove"] = True
        if comment is not None:
            kwargs["comment"] = comment
        return await self._find_and_modify(
            filter, projection, sort, let=let, hint=hint, session=session, **kwargs
        )

    async def find_one_and_replace(
        self,
        filter: Mapping[str, Any],
        replacement: Mapping[str, Any],
        projection: Mapping[str, Any] | Iterable[str] | None = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = False,
        hint: Any = None,
        session: Any = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Any:
        common.validate_ok_for_replace(replacement)
        kwargs["update"] = replacement
        if comment is not None:
            kwargs["comment"] = comment
        return await self._find_and_modify(
            filter, projection, sort, upsert, return_document, let=let, hint=hint,
            session=session, **kwargs,
        )

    async def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        projection: Mapping[str, Any] | Iterable[str] | None = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = False,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
        hint: Any = None,
        session: Any = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Any:
        common.validate_ok_for_update(update)
        common.validate_list_or_none("array_filters", array_filters)
        kwargs["update"] = update
        if comment is not None:
            kwargs["comment"] = comment
        return await self._find_and_modify(
            filter, projection, sort, upsert, return_document, array_filters, hint=hint, let=let,
            session=session, **kwargs,
        )
