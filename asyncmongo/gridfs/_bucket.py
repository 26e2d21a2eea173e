"""AsyncGridFSBucket (the GridFS spec's API) and AsyncGridFS (the older one), as PyMongo's
``gridfs.asynchronous``: thin layers over AsyncGridIn, AsyncGridOut and the files collection.

Every method takes ``session=`` and passes it to each operation it runs; none may run inside a
transaction (GridFS writes several documents non-atomically).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from bson.objectid import ObjectId
from pymongo.common import validate_string

from asyncmongo import _csot
from asyncmongo.database import AsyncDatabase
from asyncmongo.gridfs._common import (
    DEFAULT_CHUNK_SIZE,
    NoFile,
    check_acknowledged,
    check_chunk_size,
    check_session,
    without_type_registry,
)
from asyncmongo.gridfs._download import AsyncGridOut, AsyncGridOutCursor
from asyncmongo.gridfs._upload import AsyncGridIn


def _check_database(db: Any) -> None:
    if not isinstance(db, AsyncDatabase):
        raise TypeError(f"database must be an instance of AsyncDatabase, not {type(db)}")


def _revision_query(files: Any, query: Mapping[str, Any], revision: int, session: Any) -> Any:
    """A cursor on the one files document that is ``revision`` of the matching ones: 0 the
    oldest, 1 the next..., -1 the newest, -2 the one before it... (by uploadDate)."""
    if revision < 0:
        return files.find(query, limit=-1, skip=-revision - 1, sort=[("uploadDate", -1)],
                          session=session)
    return files.find(query, limit=-1, skip=revision, sort=[("uploadDate", 1)], session=session)


async def _copy_to(grid_out: AsyncGridOut, destination: Any) -> None:
    """Write the file's chunks to ``destination.write`` (a plain or a coroutine method)."""
    async with grid_out:
        while True:
            chunk = await grid_out.readchunk()
            if not chunk:
                return
            result = destination.write(chunk)
            if inspect.isawaitable(result):
                await result


class AsyncGridFSBucket:
    """A GridFS bucket in a database: files in ``<bucket_name>.files`` and their data in
    ``<bucket_name>.chunks``."""

    def __init__(
        self,
        db: AsyncDatabase,
        bucket_name: str = "fs",
        chunk_size_bytes: int = DEFAULT_CHUNK_SIZE,
        write_concern: Any = None,
        read_preference: Any = None,
        timeout: float | None = None,
    ) -> None:
        """``write_concern`` (acknowledged) and ``read_preference`` default to the database's
        and apply to every operation of the bucket; so does ``timeout`` (seconds, 0 for no limit;
        asyncmongo's, PyMongo 4.20 has none), which bounds each method and the whole life of each
        stream it opens."""
        _check_database(db)
        self._timeout = _csot.inherit(timeout, db._timeout)
        wc = write_concern if write_concern is not None else db.write_concern
        check_acknowledged(wc, "write concern")
        self._bucket_name = bucket_name
        # Unlike PyMongo, uploads and downloads use the bucket's concerns too, not only deletes
        # and renames.
        root = without_type_registry(
            db.get_collection(bucket_name, timeout=self._timeout), write_concern=write_concern,
            read_preference=read_preference,
        )
        self._collection = root
        self._files = root.files
        self._chunks = root.chunks
        self._chunk_size_bytes = check_chunk_size(chunk_size_bytes)

    # ---- uploads ---------------------------------------------------------------------------

    def _upload_options(self, filename: str, chunk_size_bytes: int | None,
                        metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        validate_string("filename", filename)
        opts: dict[str, Any] = {
            "filename": filename,
            "chunk_size": (chunk_size_bytes if chunk_size_bytes is not None
                           else self._chunk_size_bytes),
        }
        if metadata is not None:
            opts["metadata"] = metadata
        return opts

    def open_upload_stream(
        self,
        filename: str,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: Any = None,
    ) -> AsyncGridIn:
        """An AsyncGridIn to ``await write()`` the file's data to; the file exists once it is
        closed (``async with`` closes it)."""
        opts = self._upload_options(filename, chunk_size_bytes, metadata)
        return AsyncGridIn(self._collection, session=session, **opts)

    def open_upload_stream_with_id(
        self,
        file_id: Any,
        filename: str,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: Any = None,
    ) -> AsyncGridIn:
        """As ``open_upload_stream``, with the file's ``_id`` chosen by the caller (FileExists on
        close if it is taken)."""
        opts = self._upload_options(filename, chunk_size_bytes, metadata)
        return AsyncGridIn(self._collection, session=session, _id=file_id, **opts)

    @_csot.apply
    async def upload_from_stream(
        self,
        filename: str,
        source: Any,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: Any = None,
    ) -> ObjectId:
        """Upload ``source`` (bytes, or a file-like object with a plain or coroutine ``read``)
        as ``filename``; returns the new file's ``_id``."""
        async with self.open_upload_stream(filename, chunk_size_bytes, metadata,
                                           session=session) as gin:
            await gin.write(source)
        return gin._id

    @_csot.apply
    async def upload_from_stream_with_id(
        self,
        file_id: Any,
        filename: str,
        source: Any,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: Any = None,
    ) -> None:
        """As ``upload_from_stream``, with the file's ``_id`` chosen by the caller."""
        async with self.open_upload_stream_with_id(file_id, filename, chunk_size_bytes, metadata,
                                                   session=session) as gin:
            await gin.write(source)

    # ---- downloads -------------------------------------------------------------------------

    @_csot.apply
    async def open_download_stream(self, file_id: Any, session: Any = None) -> AsyncGridOut:
        """An AsyncGridOut on the file with this ``_id``; NoFile if there is none."""
        gout = AsyncGridOut(self._collection, file_id, session=session)
        await gout.open()
        return gout

    @_csot.apply
    async def download_to_stream(self, file_id: Any, destination: Any, session: Any = None) -> None:
        """Write the file's contents to ``destination`` (its ``write`` may be a coroutine
        function), a chunk at a time; NoFile if there is no such file."""
        await _copy_to(await self.open_download_stream(file_id, session=session), destination)

    @_csot.apply
    async def open_download_stream_by_name(
        self, filename: str, revision: int = -1, session: Any = None
    ) -> AsyncGridOut:
        """An AsyncGridOut on a revision of ``filename``: 0 the first uploaded, 1 the second...,
        -1 (the default) the latest, -2 the one before it...; NoFile if there is no such
        revision."""
        validate_string("filename", filename)
        check_session(session)
        cursor = _revision_query(self._files, {"filename": filename}, revision, session)
        for doc in await cursor.to_list():
            return AsyncGridOut(self._collection, file_document=doc, session=session)
        raise NoFile(f"no version {revision} for filename {filename!r}")

    @_csot.apply
    async def download_to_stream_by_name(
        self, filename: str, destination: Any, revision: int = -1, session: Any = None
    ) -> None:
        """``download_to_stream`` for a revision of ``filename``."""
        grid_out = await self.open_download_stream_by_name(filename, revision, session=session)
        await _copy_to(grid_out, destination)

    def find(self, *args: Any, **kwargs: Any) -> AsyncGridOutCursor:
        """Files matching a filter, as AsyncGridOut objects: ``filter``, ``skip``, ``limit``,
        ``no_cursor_timeout``, ``sort``, ``batch_size``, ``session``."""
        return AsyncGridOutCursor(self._collection, *args, **kwargs)

    # ---- deletes and renames ---------------------------------------------------------------

    @_csot.apply
    async def delete(self, file_id: Any, session: Any = None) -> None:
        """Delete the file and its chunks; NoFile if there is no such file (its chunks, if any
        were left behind, are deleted all the same)."""
        check_session(session)
        result = await self._files.delete_one({"_id": {"$eq": file_id}}, session=session)
        await self._chunks.delete_many({"files_id": {"$eq": file_id}}, session=session)
        if not result.deleted_count:
            raise NoFile(f"no file could be deleted because none matched {file_id}")

    @_csot.apply
    async def delete_by_name(self, filename: str, session: Any = None) -> None:
        """Delete every revision of ``filename``; NoFile if there is none."""
        check_session(session)
        cursor = self._files.find({"filename": filename}, {"_id": 1}, session=session)
        ids = [doc["_id"] for doc in await cursor.to_list()]
        result = await self._files.delete_many({"_id": {"$in": ids}}, session=session)
        await self._chunks.delete_many({"files_id": {"$in": ids}}, session=session)
        if not result.deleted_count:
            raise NoFile(f"no file could be deleted because none matched filename {filename!r}")

    @_csot.apply
    async def rename(self, file_id: Any, new_filename: str, session: Any = None) -> None:
        """Give the file a new name; NoFile if there is no such file."""
        check_session(session)
        result = await self._files.update_one(
            {"_id": {"$eq": file_id}}, {"$set": {"filename": new_filename}}, session=session
        )
        if not result.matched_count:
            raise NoFile(
                f"no files could be renamed {new_filename!r} because none matched file_id "
                f"{file_id}"
            )

    @_csot.apply
    async def rename_by_name(self, filename: str, new_filename: str, session: Any = None) -> None:
        """Rename every revision of ``filename``; NoFile if there is none."""
        check_session(session)
        result = await self._files.update_many(
            {"filename": filename}, {"$set": {"filename": new_filename}}, session=session
        )
        if not result.matched_count:
            raise NoFile(
                f"no files could be renamed {new_filename!r} because none matched filename "
                f"{filename!r}"
            )


class AsyncGridFS:
    """The older GridFS API (``put``/``get``/``get_version``...) on ``<collection>.files`` and
    ``<collection>.chunks``."""

    def __init__(self, database: AsyncDatabase, collection: str = "fs") -> None:
        _check_database(database)
        check_acknowledged(database.write_concern, "database")
        root = without_type_registry(database.get_collection(collection))
        self._collection = root
        self._files = root.files
        self._chunks = root.chunks

    def new_file(self, **kwargs: Any) -> AsyncGridIn:
        """An AsyncGridIn for a new file; keyword arguments are files document fields."""
        return AsyncGridIn(self._collection, **kwargs)

    async def put(self, data: Any, **kwargs: Any) -> Any:
        """Store ``data`` (bytes, ``str`` with ``encoding=``, or a file-like object) as a new
        file; returns its ``_id``."""
        async with AsyncGridIn(self._collection, **kwargs) as gin:
            await gin.write(data)
        return gin._id

    async def get(self, file_id: Any, session: Any = None) -> AsyncGridOut:
        """The file with this ``_id``; NoFile if there is none."""
        gout = AsyncGridOut(self._collection, file_id, session=session)
        await gout.open()
        return gout

    async def get_version(self, filename: str | None = None, version: int | None = -1,
                          session: Any = None, **kwargs: Any) -> AsyncGridOut:
        """A version of the files matching ``filename`` and the metadata fields in ``kwargs``
        (-1 the latest, 0 the first...); NoFile if there is no such version."""
        query = kwargs
        if filename is not None:
            query["filename"] = filename
        check_session(session)
        if version is None:
            version = -1
        for doc in await _revision_query(self._files, query, version, session).to_list():
            return AsyncGridOut(self._collection, file_document=doc, session=session)
        raise NoFile(f"no version {version} for filename {filename!r}")

    async def get_last_version(self, filename: str | None = None, session: Any = None,
                               **kwargs: Any) -> AsyncGridOut:
        return await self.get_version(filename=filename, session=session, **kwargs)

    async def delete(self, file_id: Any, session: Any = None) -> None:
        """Delete the file and its chunks; a missing file is not an error (as PyMongo)."""
        check_session(session)
        await self._files.delete_one({"_id": {"$eq": file_id}}, session=session)
        await self._chunks.delete_many({"files_id": {"$eq": file_id}}, session=session)

    async def list(self, session: Any = None) -> list[str]:
        """The names of the stored files."""
        check_session(session)
        names = await self._files.distinct("filename", session=session)
        return [name for name in names if name is not None]

    async def find_one(self, filter: Any = None, session: Any = None, *args: Any,
                       **kwargs: Any) -> AsyncGridOut | None:
        """The first file matching ``filter`` (a query, or an ``_id``), or None."""
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": {"$eq": filter}}
        check_session(session)
        kwargs["limit"] = -1
        for gout in await self.find(filter, *args, session=session, **kwargs).to_list():
            return gout
        return None

    def find(self, *args: Any, **kwargs: Any) -> AsyncGridOutCursor:
        """Files matching a filter, as AsyncGridOut objects."""
        return AsyncGridOutCursor(self._collection, *args, **kwargs)

    async def exists(self, document_or_id: Any = None, session: Any = None, **kwargs: Any) -> bool:
        """Whether a file matches the ``_id``, the query document, or the keyword fields."""
        check_session(session)
        if kwargs:
            query = kwargs
        elif document_or_id is not None and not isinstance(document_or_id, Mapping):
            query = {"_id": {"$eq": document_or_id}}
        else:
            query = document_or_id
        return await self._files.find_one(query, {"_id": 1}, session=session) is not None
