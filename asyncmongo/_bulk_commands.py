"""Bulk writes sent as write commands built here: the workaround for what libmongoc 1.23's bulk API
cannot send.

It covers a per-operation ``sort`` in ``UpdateOne``/``ReplaceOne`` (MongoDB 8.0; libmongoc answers
"Invalid option") and an explicit ``bypass_document_validation=False`` (libmongoc leaves it out of
the command), for ``bulk_write``, ``insert_one`` and ``insert_many``. Batching is PyMongo's: ordered,
runs of one kind in the given order, stopping at the first write error; unordered, all inserts, then
updates, then deletes; each batch cut to the server's limits.

It is also how every write goes under a timeout (Client Side Operations Timeout): libmongoc's bulk
API takes no maxTimeMS. Then all batches share the operation's one deadline, each is sent with
maxTimeMS = time left, and a batch of single-document statements is a retryable write: the core
numbers it (txnNumber) and retries it while time is left. Without a timeout these commands are not
retried (libmongoc retries its bulk API's writes only).
"""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from typing import Any, Mapping, Sequence

from bson.raw_bson import RawBSONDocument
from pymongo import helpers_shared
from pymongo.errors import WriteConcernError

from asyncmongo import _core, _csot
from asyncmongo._bulk import K_DELETE, K_INSERT, K_UPDATE, BulkBuilder
from asyncmongo._common import MAX_STATEMENTS_SIZE, MAX_WRITE_BATCH_SIZE, check_command_size
from asyncmongo._common import encode as _encode
from asyncmongo.client_session import run_in_session


# The write command of each kind of bulk operation, and the field of its statements.
_COMMANDS = {K_INSERT: ("insert", "documents"), K_UPDATE: ("update", "updates"),
             K_DELETE: ("delete", "deletes")}


def needs_commands(bulk: BulkBuilder, bypass_document_validation: bool | None) -> bool:
    """Whether libmongoc's bulk API cannot send this bulk."""
    return bulk.uses_sort or bulk.uses_odd_array or bypass_document_validation is False


def _runs(kinds: Sequence[int], ordered: bool) -> list[tuple[int, list[int]]]:
    """(kind, request indexes) of each write command, in the order they are sent."""
    runs: list[tuple[int, list[int]]] = []
    if ordered:
        for i, kind in enumerate(kinds):
            if runs and runs[-1][0] == kind:
                runs[-1][1].append(i)
            else:
                runs.append((kind, [i]))
    else:
        for kind in (K_INSERT, K_UPDATE, K_DELETE):
            indexes = [i for i, k in enumerate(kinds) if k == kind]
            if indexes:
                runs.append((kind, indexes))
    return runs


def _merge_reply(
    full: dict[str, Any], kind: int, reply: Mapping[str, Any], indexes: list[int],
    ops: Sequence[Any],
) -> None:
    """Add one write command's reply to a bulk_api_result (its statement j is request
    indexes[j]), as PyMongo merges its write commands' replies."""
    n = reply.get("n", 0)
    if kind == K_INSERT:
        full["nInserted"] += n
    elif kind == K_DELETE:
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



def _single_statement(op: Mapping[str, Any], kind: int) -> bool:
    """A statement a retryable write may carry (not updateMany/deleteMany)."""
    if kind == K_UPDATE:
        return not op.get("multi")
    if kind == K_DELETE:
        return op.get("limit") == 1
    return True


def _empty_result() -> dict[str, Any]:
    return {
        "writeErrors": [], "writeConcernErrors": [], "nInserted": 0, "nUpserted": 0,
        "nMatched": 0, "nModified": 0, "nRemoved": 0, "upserted": [],
    }


async def run_bulk_by_commands(
    coll: Any, bulk: BulkBuilder, ordered: bool, bypass: bool | None, comment: Any, let: Any,
    session: Any,
) -> dict[str, Any]:
    """The entry point: run ``bulk`` on ``coll`` as write commands; PyMongo's bulk_api_result of
    what the server did (write errors in it, not raised)."""
    full = _empty_result()
    codec = coll._codec_options
    write_opts = _csot.write_opts(coll._write_concern, coll._write_opts)
    acknowledged = coll._write_concern.acknowledged
    for kind, indexes in _runs(bulk.kinds, ordered):
        name, field = _COMMANDS[kind]
        head: dict[str, Any] = {name: coll._name, "ordered": ordered}
        if comment:
            head["comment"] = comment
        if bypass is not None:
            head["bypassDocumentValidation"] = bypass
        if let is not None and kind != K_INSERT:
            head["let"] = let
        # The statements' array: type byte, name, NUL, length, terminating NUL.
        base = len(_encode(head, False, codec)) + len(field) + 7
        start = 0
        while start < len(indexes):
            size, batch = base, []
            for i in indexes[start:start + MAX_WRITE_BATCH_SIZE]:
                stmt = _encode(bulk.ops[i], False, codec)
                grow = 2 + len(str(len(batch))) + len(stmt)
                if batch and size + grow > MAX_STATEMENTS_SIZE:
                    break
                batch.append(RawBSONDocument(stmt))
                size += grow
            cmd = dict(head)
            cmd[field] = batch
            raw = check_command_size(_encode(cmd, False, codec))  # a statement alone too large
            retryable = acknowledged and all(_single_statement(bulk.ops[i], kind) for i in
                                             indexes[start:start + len(batch)])
            try:
                reply = await run_in_session(
                    coll._client._core, session, _core.OP_WRITE, _core.RES_DOC, coll._db_name,
                    None, raw, write_opts, None, 0, 0, None,
                    _csot.WRITE if retryable else _csot.COMMAND,
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
