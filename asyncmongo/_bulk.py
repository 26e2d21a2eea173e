"""One bulk write, described once for both ways of running it: PyMongo's operations collected and
checked as PyMongo's bulk does (``BulkBuilder``), and the shapes of PyMongo's results and errors
built from what the server or libmongoc answered (``bulk_api_result``, ``write_concern_error``).
"""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from typing import Any, Mapping, Sequence

from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo import common
from pymongo.errors import WriteConcernError, WTimeoutError

from asyncmongo import _core
from asyncmongo._common import check_command_size
from asyncmongo._common import encode as _encode


# PyMongo's kinds of write command. An unordered bulk runs all inserts, then all updates, then all
# deletes (pymongo.bulk_shared.gen_unordered); ours must run in the same order to end in the same
# state, so it is regrouped before it is sent.
K_INSERT, K_UPDATE, K_DELETE = 0, 1, 2


def libmongoc_reads_array(update: list[Any]) -> bool:
    """Whether libmongoc's bulk API sends this array update as a pipeline (an array): only when it
    is not empty and every stage is a document whose first key starts with "$". Any other array it
    sends as a *document* with keys "0", "1"...: a replacement, where PyMongo sends the array and
    the server refuses it. Such an update must go by command."""
    return bool(update) and all(
        isinstance(stage, AbcMapping) and len(stage) > 0 and str(next(iter(stage))).startswith("$")
        for stage in update)

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


class BulkBuilder:
    """Collects the operations of a ``bulk_write``.

    PyMongo's operation classes (``pymongo.InsertOne`` ...) add themselves to a bulk by calling
    ``add_insert`` / ``add_update`` / ``add_replace`` / ``add_delete`` (``_add_to_bulk``): this
    class takes those calls, checks each operation as PyMongo's bulk does and encodes it for the
    core.
    """

    __slots__ = (
        "coll", "ops", "kinds", "specs", "uses_collation", "uses_array_filters", "uses_sort",
        "uses_odd_array"
    )

    def __init__(self, coll: Any) -> None:
        self.coll = coll
        self.ops: list[Any] = []  # PyMongo's operation documents: error details name them
        self.kinds: list[int] = []
        self.specs: list[bytes] = []
        self.uses_collation = False
        self.uses_array_filters = False
        self.uses_sort = False
        # An update given as an array that is not a pipeline to libmongoc (libmongoc_reads_array)
        self.uses_odd_array = False

    def _add(self, kind: int, op: Any, spec: Mapping[str, Any] | bytes) -> None:
        if not isinstance(spec, bytes):
            spec = check_command_size(_encode(spec, False, self.coll._codec_options))
        self.ops.append(op)
        self.kinds.append(kind)
        self.specs.append(spec)

    def add_insert(self, document: Any) -> None:
        common.validate_is_document_type("document", document)
        if not (isinstance(document, RawBSONDocument) or "_id" in document):
            document["_id"] = ObjectId()
        # The document goes in already encoded (its _id first, its size checked).
        raw = RawBSONDocument(self.coll._encode_document(document))
        self._add(K_INSERT, document, _encode({"op": _core.BULK_INSERT, "d": raw}))

    def _statement(self, op: dict[str, Any], upsert: Any, collation: Any, hint: Any,
                   sort: Any = None, array_filters: Any = None) -> dict[str, Any]:
        """Add the optional fields to PyMongo's statement ``op``; return libmongoc's options for
        the operation. Keys are left to the server, as PyMongo does ("validate": False)."""
        o: dict[str, Any] = {"validate": False}
        for key, value in (("upsert", upsert), ("collation", collation),
                           ("arrayFilters", array_filters), ("hint", hint)):
            if value is not None:
                op[key] = o[key] = value
        self.uses_collation |= collation is not None
        self.uses_array_filters |= array_filters is not None
        if sort is not None:  # libmongoc 1.23 cannot send it: the command engine does
            self.uses_sort = True
            op["sort"] = sort
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
        if isinstance(update, list) and not libmongoc_reads_array(update):
            self.uses_odd_array = True  # the command engine sends it as the array it is
        op: dict[str, Any] = {"q": selector, "u": update, "multi": multi}
        o = self._statement(op, upsert, collation, hint, sort, array_filters)
        code = _core.BULK_UPDATE_MANY if multi else _core.BULK_UPDATE_ONE
        self._add(K_UPDATE, op, {"op": code, "d": selector, "u": update, "o": o})

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
        o = self._statement(op, upsert, collation, hint, sort)
        self._add(K_UPDATE, op, {"op": _core.BULK_REPLACE_ONE, "d": selector, "u": replacement,
                                 "o": o})

    def add_delete(
        self, selector: Any, limit: int, collation: Any = None, hint: Any = None
    ) -> None:
        op: dict[str, Any] = {"q": selector, "limit": limit}
        o = self._statement(op, None, collation, hint)
        del o["validate"]  # not an option of libmongoc's deletes
        code = _core.BULK_DELETE_ONE if limit == 1 else _core.BULK_DELETE_MANY
        self._add(K_DELETE, op, {"op": code, "d": selector, "o": o})
