"""The suite's server helpers live in asyncmongo.testing (the pytest plugin's package); this module
re-exports them for the tests that import them from here."""

from asyncmongo.testing._server import (  # noqa: F401
    SECANTUS_VERSION,
    ExternalServer,
    ServerProcess,
    server_from_env,
)

__all__ = ["SECANTUS_VERSION", "ExternalServer", "ServerProcess", "server_from_env"]
