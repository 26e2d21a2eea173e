"""asyncmongo: an asyncio driver for MongoDB with a C core over libmongoc, and PyMongo's async API."""

from asyncmongo.client import AsyncMongoClient
from asyncmongo.collection import AsyncCollection
from asyncmongo.database import AsyncDatabase

__version__ = "0.1.0"
version = __version__

__all__ = ["AsyncMongoClient", "AsyncDatabase", "AsyncCollection", "__version__", "version"]
