"""Writes of AsyncCollection: update, replace, delete, bulk_write, find_one_and_*.

Arguments are checked as PyMongo checks them (same exception types) before anything is sent; the
results are PyMongo's result classes holding the documents PyMongo would hold (``raw_result``,
``bulk_api_result``, ``BulkWriteError.details``), so code reading them works unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from typing import Any, Awaitable, Iterable, Mapping, Sequence

from pymongo import common, helpers_shared
from pymongo.collation import validate_collation_or_none
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    DuplicateKeyError,
    InvalidOperation,
    OperationFailure,
    WriteConcernError,
    WriteError,
)
from pymongo.results import BulkWriteResult, DeleteResult, UpdateResult
from pymongo.write_concern import WriteConcern

from asyncmongo import _core, _csot
from asyncmongo._bulk import BulkBuilder, bulk_api_result, libmongoc_reads_array, write_concern_error
from asyncmongo._bulk_commands import needs_commands, run_bulk_by_commands
from asyncmongo._common import check_command_size as _check_size
from asyncmongo._common import encode as _encode
from asyncmongo.client_session import check_session, run_in_session

_validate_boolean = common.validate_boolean
_validate_is_mapping = common.validate_is_mapping
_index_document = helpers_shared._index_document

_OP_WRITE = _core.OP_WRITE
_OP_READ_WRITE = _core.OP_READ_WRITE
_OP_BULK = _core.OP_BULK
_RES_WRITE = _core.RES_WRITE
_RES_BULK = _core.RES_BULK
_RES_DOC = _core.RES_DOC

_UNACK_COLLATION = "Collation is unsupported for unacknowledged writes."
_UNACK_ARRAY_FILTERS = "arrayFilters is unsupported for unacknowledged writes."


def _is_update_document(document: Any) -> bool:
    """An update (operators, or a pipeline) rather than a replacement document."""
    if isinstance(document, list):
        return True
    return bool(document) and next(iter(document)).startswith("$")


def _hint_value(hint: Any) -> Any:
    return hint if isinstance(hint, str) else _index_document(hint)


class _WritesMixin:
    __slots__ = ()

    # ---- update / replace ------------------------------------------------------------------

    async def _acknowledged_outcome(self, write: Awaitable[Any]) -> Any:
        """The one place unacknowledged writes are handled: the outcome of ``write``, or None for
        an unacknowledged write, whose outcome the server does not report (with w=0 PyMongo never
        sees the server's verdict either, so none is raised)."""
        if self._acknowledged:
            return await write
        try:
            await write
        except OperationFailure:
            pass
        return None

    async def _await_write(self, session: Any, *job: Any) -> Any:
        """Run the write job (core.submit's arguments), in ``session`` if given: its reply, or
        None when unacknowledged."""
        return await self._acknowledged_outcome(run_in_session(self._client._core, session, *job))

    async def _write_command(self, cmd: dict[str, Any], session: Any, retryable: bool = False) -> Any:
        """Run an update/delete command: a multi-document one is not retryable (as PyMongo's are
        not); a single-document one, sent so under a timeout, is (the core numbers it)."""
        raw = _check_size(_encode(cmd, False, self._codec_options))
        timed = _csot.WRITE if retryable and self._acknowledged else _csot.COMMAND
        return await self._await_write(
            session, _OP_WRITE, _RES_WRITE, self._db_name, None, raw,
            _csot.write_opts(self._write_concern, self._write_opts), None, 0, 0, None, timed,
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
        raw = _check_size(_encode({"op": kind, **spec}, False, self._codec_options))
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
        odd_array = isinstance(document, list) and not libmongoc_reads_array(document)
        if (not multi and sort is None and bypass_document_validation is not False and not odd_array
                and not _csot.enabled()):
            # Retryable: see _single_write. (libmongoc's bulk API takes no per-update sort, and
            # would send an odd array update as a replacement document: libmongoc_reads_array.)
            opts = {k: v for k, v in spec.items() if k in ("upsert", "collation", "arrayFilters", "hint")}
            opts["validate"] = False  # the server judges the document, as with PyMongo
            if let is not None:
                _validate_is_mapping("let", let)
            counts = await self._single_write(
                _core.BULK_UPDATE_ONE if _is_update_document(document) else _core.BULK_REPLACE_ONE,
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
        reply = await self._write_command(cmd, session, retryable=not multi)
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

    @_csot.apply
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

    @_csot.apply
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

    @_csot.apply
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
        if not multi and not _csot.enabled():  # a timeout needs a write command (maxTimeMS)
            if let is not None:
                common.validate_is_document_type("let", let)
            opts = {k: v for k, v in spec.items() if k in ("collation", "hint")}
            counts = await self._single_write(_core.BULK_DELETE_ONE, {"d": filter, "o": opts}, let,
                                              comment, None, session)
            if counts is None:
                return DeleteResult({"ok": 1}, False)
            return DeleteResult({"n": counts.get("nRemoved", 0), "ok": 1.0}, True)
        cmd: dict[str, Any] = {"delete": self._name, "ordered": True, "deletes": [spec]}
        if let is not None:
            common.validate_is_document_type("let", let)
            cmd["let"] = let
        if comment is not None:
            cmd["comment"] = comment
        reply = await self._write_command(cmd, session, retryable=not multi)
        if reply is None:
            # PyMongo's unacknowledged command reply.
            return DeleteResult({"ok": 1}, False)
        return DeleteResult(reply, True)

    @_csot.apply
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

    @_csot.apply
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

    @_csot.apply
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
        bulk = BulkBuilder(self)
        for request in requests:
            try:
                request._add_to_bulk(bulk)
            except AttributeError:
                raise TypeError(f"{request!r} is not a valid request") from None
        session = self._write_session(session)
        if not bulk.ops:
            raise InvalidOperation("No operations to execute")
        if not self._acknowledged:
            if bulk.uses_collation:
                raise ConfigurationError(_UNACK_COLLATION)
            if bulk.uses_array_filters:
                raise ConfigurationError(_UNACK_ARRAY_FILTERS)
            if bypass_document_validation:
                raise OperationFailure(
                    "Cannot set bypass_document_validation with unacknowledged write concern"
                )
        full = await self._execute_bulk(bulk, ordered, bypass_document_validation, comment, let,
                                        session)
        if full is None:
            return BulkWriteResult({}, False)
        raise_bulk_errors(full)
        return BulkWriteResult(full, True)

    async def _execute_bulk(
        self, bulk: BulkBuilder, ordered: bool, bypass: bool | None, comment: Any, let: Any,
        session: Any,
    ) -> dict[str, Any] | None:
        """Run a collected bulk by whichever engine can send it: PyMongo's bulk_api_result (write
        errors in it, not raised), or None when unacknowledged."""
        if needs_commands(bulk, bypass) or _csot.enabled():  # a timeout needs write commands
            run = run_bulk_by_commands(self, bulk, ordered, bypass, comment, let, session)
        else:
            run = self._bulk_by_libmongoc(bulk, ordered, bypass, comment, let, session)
        return await self._acknowledged_outcome(run)

    async def _bulk_by_libmongoc(
        self, bulk: BulkBuilder, ordered: bool, bypass: bool | None, comment: Any, let: Any,
        session: Any,
    ) -> dict[str, Any]:
        """Run a bulk through libmongoc's bulk API (one job): it batches by the server's limits
        and retries as the retryable writes specification says."""
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
        flags = _core.FLAG_BYPASS if bypass else 0
        try:
            reply = await run_in_session(
                self._client._core, session, _OP_BULK, _RES_BULK, self._db_name, self._name,
                b"".join(specs), _encode(opts), None, flags,
            )
        except BulkWriteError as exc:  # the partial result, in libmongoc's shape
            reply = exc.details
        return bulk_api_result(reply, bulk.ops, order)

    async def _insert_by_commands(
        self, documents: list[Any], ordered: bool, comment: Any, session: Any, single: bool = False,
        bypass: bool | None = False,
    ) -> None:
        """insert_one / insert_many as insert commands (see _bulk_commands): with
        bypass_document_validation=False, or under a timeout. Raises what PyMongo raises
        (insert_one: WriteError, DuplicateKeyError, WriteConcernError; insert_many:
        BulkWriteError)."""
        bulk = BulkBuilder(self)
        for document in documents:
            bulk.add_insert(document)
        full = await self._execute_bulk(bulk, ordered, bypass, comment, None, session)
        if full is None:
            return
        if single:
            raise_single_write_error(full)
        raise_bulk_errors(full)

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
            opts = _encode({"writeConcern": _csot.write_concern_doc(write_concern)})
        else:
            write_concern = self._write_concern
            opts = _csot.write_opts(write_concern, self._write_opts)
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
                opts, self._codec_options, 0, 0, None,
                _csot.WRITE if acknowledged else _csot.COMMAND,  # retryable, as PyMongo's
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

    @_csot.apply
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

    @_csot.apply
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

    @_csot.apply
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


def raise_bulk_errors(full: dict[str, Any]) -> None:
    """BulkWriteError for a bulk_api_result with write or write concern errors."""
    if full["writeErrors"] or full["writeConcernErrors"]:
        full["writeErrors"].sort(key=lambda e: e["index"])
        raise BulkWriteError(full)


def raise_single_write_error(full: dict[str, Any]) -> None:
    """What a one-document write raises for a bulk_api_result with errors (PyMongo's classes)."""
    errors, wces = full["writeErrors"], full["writeConcernErrors"]
    if errors:
        err = dict(errors[0])
        err.pop("op", None)
        code = err.get("code")
        cls = DuplicateKeyError if code in (11000, 11001, 12582) else WriteError
        raise cls(err.get("errmsg"), code, err)
    if wces:
        raise write_concern_error(wces[-1])
