"""asyncmongo: an asyncio driver for MongoDB with a C core over libmongoc, and PyMongo's async API."""

import logging

from asyncmongo.client import AsyncMongoClient
from asyncmongo.cursor import AsyncCursor
from asyncmongo.collection import AsyncCollection
from asyncmongo.command_cursor import AsyncCommandCursor
from asyncmongo.database import AsyncDatabase

# A library's logger stays silent unless the application configures logging (libmongoc's warnings
# about broken connections arrive here; the operation's exception already tells the caller).
logging.getLogger("asyncmongo").addHandler(logging.NullHandler())

__version__ = "0.1.0"
version = __version__

__all__ = [
    "AsyncMongoClient",
    "AsyncDatabase",
    "AsyncCollection",
    "AsyncCursor",
    "AsyncCommandCursor",
    "__version__",
    "version",
]
