"""Collection administration: indexes, rename, options.

Arguments are checked with PyMongo's own rules (IndexModel, helpers_shared) before anything is sent;
write commands go through AsyncDatabase._write_command (the collection's write concern applies),
index listings through a command cursor, as PyMongo's.
"""

from __future__ import annotations

from typing import Any

from bson.codec_options import CodecOptions
from bson.son import SON
from pymongo import common, helpers_shared
from pymongo.errors import InvalidName, OperationFailure
from pymongo.operations import IndexModel, SearchIndexModel
from pymongo.read_concern import DEFAULT_READ_CONCERN
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import DEFAULT_WRITE_CONCERN

from asyncmongo import _csot
from asyncmongo._common import primary_read
from asyncmongo.client_session import check_session
from asyncmongo.command_cursor import AsyncCommandCursor, ready_batch, run_cursor_command

# PyMongo returns index documents as SON, whatever the collection's codec options.
_INDEX_CODEC_OPTIONS: CodecOptions = CodecOptions(SON)
# Errors a drop tolerates: the collection does not exist.
_NS_NOT_FOUND = ("ns not found", 26)
# Search index replies are read by the driver: undecodable text is replaced, as PyMongo's.
_REPLACE_CODEC_OPTIONS: CodecOptions = CodecOptions(unicode_decode_error_handler="replace")


class _AdminMixin:
    __slots__ = ()

    # ---- indexes ---------------------------------------------------------------------------

    @_csot.apply
    async def create_indexes(
        self, indexes: Any, session: Any = None, comment: Any = None, **kwargs: Any
    ) -> list[str]:
        """Create the indexes described by a list of ``IndexModel``; returns their names."""
        session = check_session(self._client, session)
        common.validate_list("indexes", indexes)
        if comment is not None:
            kwargs["comment"] = comment
        return await self._create_indexes(indexes, kwargs, session)

    async def _create_indexes(
        self, indexes: Any, cmd_options: dict[str, Any], session: Any = None
    ) -> list[str]:
        names: list[str] = []
        documents = []
        for index in indexes:
            if not isinstance(index, IndexModel):
                raise TypeError(f"{index!r} is not an instance of pymongo.operations.IndexModel")
            document = index.document
            names.append(document["name"])
            documents.append(document)
        cmd: dict[str, Any] = {"createIndexes": self._name, "indexes": documents}
        cmd.update(cmd_options)
        await self._database._write_command(
            cmd, self._write_opts, self._codec_options, session=session
        )
        return names

    @_csot.apply
    async def create_index(
        self, keys: Any, session: Any = None, comment: Any = None, **kwargs: Any
    ) -> str:
        """Create one index; returns its name (generated as PyMongo does unless ``name`` is given)."""
        session = check_session(self._client, session)
        cmd_options: dict[str, Any] = {}
        # maxTimeMS belongs to the command, every other keyword to the index (as PyMongo).
        if "maxTimeMS" in kwargs:
            cmd_options["maxTimeMS"] = kwargs.pop("maxTimeMS")
        if comment is not None:
            cmd_options["comment"] = comment
        index = IndexModel(keys, **kwargs)
        return (await self._create_indexes([index], cmd_options, session))[0]

    @_csot.apply
    async def drop_indexes(self, session: Any = None, comment: Any = None, **kwargs: Any) -> None:
        """Drop every index but ``_id``'s; a missing collection is not an error."""
        if comment is not None:
            kwargs["comment"] = comment
        await self._drop_index("*", session, None, kwargs)

    @_csot.apply
    async def drop_index(
        self, index_or_name: Any, session: Any = None, comment: Any = None, **kwargs: Any
    ) -> None:
        """Drop one index, by name or by the key list it was created with."""
        await self._drop_index(index_or_name, session, comment, kwargs)

    async def _drop_index(
        self, index_or_name: Any, session: Any, comment: Any, kwargs: dict[str, Any]
    ) -> None:
        session = check_session(self._client, session)
        name = index_or_name
        if isinstance(index_or_name, list):
            name = helpers_shared._gen_index_name(index_or_name)
        if not isinstance(name, str):
            raise TypeError(f"index_or_name must be an instance of str or list, not {type(name)}")
        cmd: dict[str, Any] = {"dropIndexes": self._name, "index": name}
        cmd.update(kwargs)
        if comment is not None:
            cmd["comment"] = comment
        await self._database._write_command(
            cmd, self._write_opts, self._codec_options, allowable_errors=_NS_NOT_FOUND,
            session=session,
        )

    @_csot.apply
    async def list_indexes(self, session: Any = None, comment: Any = None,
                           timeout_mode: str | None = None) -> AsyncCommandCursor:
        """A command cursor over the index documents (SON, as PyMongo's); empty if the collection
        does not exist. ``timeout_mode``: asyncmongo's, see AsyncCursor."""
        session = check_session(self._client, session)
        timeout = _csot.CursorTimeout(self._timeout, timeout_mode)
        cmd: dict[str, Any] = {"listIndexes": self._name, "cursor": {}}
        if comment is not None:
            cmd["comment"] = comment
        client = self._client
        op, prefs = primary_read(client)
        try:
            return await run_cursor_command(
                client, self._db_name, cmd, _INDEX_CODEC_OPTIONS, op=op, read_prefs=prefs,
                comment=comment, session=session, timeout=timeout,
            )
        except OperationFailure as exc:
            if exc.code != 26:  # NamespaceNotFound reads as no indexes, as PyMongo
                raise
            return AsyncCommandCursor(
                client, self._db_name, ready_batch([], self._full_name), _INDEX_CODEC_OPTIONS,
                comment=comment,
            )

    @_csot.apply
    async def index_information(self, session: Any = None, comment: Any = None) -> dict[str, Any]:
        """``{name: {"key": [(field, direction), ...], ...other index fields}}`` as PyMongo's."""
        cursor = await self.list_indexes(session=session, comment=comment)
        info: dict[str, Any] = {}
        async for index in cursor:
            index["key"] = list(index["key"].items())
            index = dict(index)
            info[index.pop("name")] = index
        return info

    # ---- Atlas search indexes (plain commands to the primary, as PyMongo sends them) ---------

    async def list_search_indexes(
        self, name: str | None = None, session: Any = None, comment: Any = None, **kwargs: Any
    ) -> AsyncCommandCursor:
        """A command cursor over the collection's search indexes (``$listSearchIndexes``), all of
        them or the one named ``name``."""
        stage: dict[str, Any] = {} if name is None else {"name": name}
        coll = self.with_options(
            codec_options=CodecOptions(), read_preference=ReadPreference.PRIMARY,
            write_concern=DEFAULT_WRITE_CONCERN, read_concern=DEFAULT_READ_CONCERN,
        )
        return await coll.aggregate([{"$listSearchIndexes": stage}], session=session,
                                    comment=comment, **kwargs)

    async def create_search_index(
        self, model: Any, session: Any = None, comment: Any = None, **kwargs: Any
    ) -> str:
        """Create one search index (a SearchIndexModel or its fields); returns its name."""
        if not isinstance(model, SearchIndexModel):
            model = SearchIndexModel(**model)
        return (await self.create_search_indexes([model], session, comment, **kwargs))[0]

    async def create_search_indexes(
        self, models: list[Any], session: Any = None, comment: Any = None, **kwargs: Any
    ) -> list[str]:
        """Create search indexes (``createSearchIndexes``); returns their names."""
        indexes = []
        for index in models:
            if not isinstance(index, SearchIndexModel):
                raise TypeError(
                    f"{index!r} is not an instance of pymongo.operations.SearchIndexModel"
                )
            indexes.append(index.document)
        if comment is not None:
            kwargs["comment"] = comment
        cmd: dict[str, Any] = {"createSearchIndexes": self._name, "indexes": indexes}
        cmd.update(kwargs)
        reply = await self._database.command(cmd, session=session,
                                             codec_options=_REPLACE_CODEC_OPTIONS)
        return [index["name"] for index in reply["indexesCreated"]]

    async def drop_search_index(
        self, name: str, session: Any = None, comment: Any = None, **kwargs: Any
    ) -> None:
        """Drop a search index by name (``dropSearchIndex``); a missing collection is not an
        error."""
        cmd: dict[str, Any] = {"dropSearchIndex": self._name, "name": name}
        await self._search_index_command(cmd, session, comment, kwargs)

    async def update_search_index(
        self, name: str, definition: Any, session: Any = None, comment: Any = None, **kwargs: Any
    ) -> None:
        """Replace a search index's definition (``updateSearchIndex``)."""
        cmd: dict[str, Any] = {"updateSearchIndex": self._name, "name": name,
                               "definition": definition}
        await self._search_index_command(cmd, session, comment, kwargs)

    async def _search_index_command(self, cmd: dict[str, Any], session: Any, comment: Any,
                                    kwargs: dict[str, Any]) -> None:
        cmd.update(kwargs)
        if comment is not None:
            cmd["comment"] = comment
        await self._database.command(cmd, session=session, codec_options=_REPLACE_CODEC_OPTIONS,
                                     allowable_errors=_NS_NOT_FOUND)

    # ---- collection ------------------------------------------------------------------------

    @_csot.apply
    async def rename(
        self, new_name: str, session: Any = None, comment: Any = None, **kwargs: Any
    ) -> Any:
        """Rename this collection (``renameCollection`` on admin); extra keywords such as
        ``dropTarget=True`` go to the command. Returns the server's reply."""
        session = check_session(self._client, session)
        if not isinstance(new_name, str):
            raise TypeError(f"new_name must be an instance of str, not {type(new_name)}")
        if not new_name or ".." in new_name:
            raise InvalidName("collection names cannot be empty")
        if new_name[0] == "." or new_name[-1] == ".":
            raise InvalidName("collection names must not start or end with '.'")
        if "$" in new_name and not new_name.startswith("oplog.$main"):
            raise InvalidName("collection names must not contain '$'")
        cmd: dict[str, Any] = {"renameCollection": self._full_name, "to": f"{self._db_name}.{new_name}"}
        cmd.update(kwargs)
        if comment is not None:
            cmd["comment"] = comment
        return await self._database._write_command(
            cmd, self._write_opts, self._codec_options, db_name="admin", session=session
        )

    @_csot.apply
    async def options(self, session: Any = None, comment: Any = None) -> dict[str, Any]:
        """The options the collection was created with (``{}`` if it does not exist)."""
        database = self._client.get_database(
            self._db_name, self._codec_options, self._read_preference, self._write_concern,
            self._read_concern, self._timeout,
        )
        cursor = await database.list_collections(
            session=session, filter={"name": self._name}, comment=comment
        )
        result = None
        async for doc in cursor:
            result = doc
            break
        await cursor.close()
        if not result:
            return {}
        options = result.get("options", {})
        options.pop("create", None)
        return options
