"""asyncmongo.testing: a real server for your tests.

The pytest plugin (``asyncmongo.testing.plugin``, enabled by installing ``asyncmongo-driver[testing]``)
gives a project's tests the ``mongodb_server`` and ``async_mongo_client`` fixtures. The server helpers
it uses are public for code outside pytest (examples, scripts): ``ServerProcess`` runs SecantusDB in
its own process, ``server_from_env()`` honours ``MONGODB_URI``. Importing this package starts nothing.
"""

from asyncmongo.testing._server import (
    SECANTUS_VERSION,
    ExternalServer,
    Server,
    ServerProcess,
    server_from_env,
)

__all__ = ["SECANTUS_VERSION", "ExternalServer", "Server", "ServerProcess", "server_from_env"]
