"""AsyncDatabase: PyMongo's async database API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import bson
from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from bson.son import SON
from pymongo.errors import ConfigurationError, InvalidName, OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from asyncmongo import _core
from asyncmongo._execute import execute, refuse_session
from asyncmongo.collection import AsyncCollection, check_command_size

if TYPE_CHECKING:
    from asyncmongo.client import AsyncMongoClient


def _check_name(name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name must be an instance of str, not {type(name)}")
    if not name:
        raise InvalidName("database name cannot be the empty string")
    for invalid in (" ", ".", "$", "/", "\\", "\x00", '"'):
        if invalid in name:
            raise InvalidName(f"database names cannot contain the character {invalid!r}")


class AsyncDatabase:
    def __init__(
        self,
        client: "AsyncMongoClient",
        name: str,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> None:
        _check_name(name)
        self._client = client
        self._name = name
        self._codec_options = codec_options or client.codec_options
        self._read_preference = read_preference or client.read_preference
        self._write_concern = write_concern or client.write_concern
        self._read_concern = read_concern or client.read_concern

    @property
    def client(self) -> "AsyncMongoClient":
        return self._client

    @property
    def name(self) -> str:
        return self._name

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

    def __getattr__(self, name: str) -> AsyncCollection:
        if name.startswith("_"):
            raise AttributeError(
                f"AsyncDatabase has no attribute {name!r}. To access the {name} collection, use "
                f"database[{name!r}]."
            )
        return self.get_collection(name)

    def __getitem__(self, name: str) -> AsyncCollection:
        return self.get_collection(name)

    def get_collection(
        self,
        name: str,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> AsyncCollection:
        return AsyncCollection(self, name, codec_options, read_preference, write_concern, read_concern)

    async def command(
        self,
        command: str | Mapping[str, Any],
        value: Any = 1,
        check: bool = True,
        allowable_errors: Any = None,
        read_preference: Any = None,
        codec_options: CodecOptions = DEFAULT_CODEC_OPTIONS,
        session: Any = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Run a database command, as PyMongo's ``AsyncDatabase.command``.

        Sent as it is (no read preference other than primary is applied unless given)."""
        refuse_session(session)
        if isinstance(command, str):
            command = SON([(command, value)])
        elif not isinstance(command, Mapping):
            raise TypeError(f"command must be an instance of str or a mapping, not {type(command)}")
        if kwargs or comment is not None:
            command = SON(command)
            command.update(kwargs)
            if comment is not None:
                command["comment"] = comment
        if read_preference is not None and read_preference.mode != 0:
            raise ConfigurationError(
                "asyncmongo runs commands on the primary; a read_preference for command() is not "
                "supported yet"
            )
        if not isinstance(codec_options, CodecOptions):
            raise TypeError("codec_options must be an instance of CodecOptions")
        cmd = check_command_size(bson.encode(command, False, self._codec_options))
        core = self._client._core
        try:
            return await execute(
                core, core.submit(_core.OP_COMMAND, _core.RES_DOC, self._name, None, cmd, None, codec_options)
            )
        except OperationFailure as exc:
            details = exc.details or {}
            allowed = allowable_errors or ()
            if not check or exc.code in allowed or details.get("errmsg") in allowed:
                return details
            raise

    def with_options(
        self,
        codec_options: CodecOptions | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> "AsyncDatabase":
        return AsyncDatabase(
            self._client,
            self._name,
            codec_options or self._codec_options,
            read_preference or self._read_preference,
            write_concern or self._write_concern,
            read_concern or self._read_concern,
        )

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, AsyncDatabase):
            return self._client is other._client and self._name == other._name
        return NotImplemented

    def __hash__(self) -> int:
        return hash((id(self._client), self._name))

    def __repr__(self) -> str:
        return f"AsyncDatabase({self._client!r}, {self._name!r})"

    def __iter__(self):
        return self

    def __next__(self):
        raise TypeError("'AsyncDatabase' object is not iterable")

    def __bool__(self) -> bool:
        raise NotImplementedError(
            "AsyncDatabase objects do not implement truth value testing or bool(). "
            "Please compare with None instead: database is not None"
        )
