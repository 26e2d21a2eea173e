"""libmongoc's descriptions of the deployment as PyMongo's objects.

The core gives ServerFacts and TopologyFacts (struct sequences, csrc/topology.c) copied from
libmongoc's server and topology descriptions; this leaf module turns them into PyMongo's
``ServerDescription`` and ``TopologyDescription`` (which derive the server's details from its hello
reply, as PyMongo's monitor does), keeping libmongoc's verdicts: its server type, round trip time and
last update time. It imports nothing of asyncmongo but the core.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.settings import TopologySettings
from pymongo.hello import Hello
from pymongo.server_description import ServerDescription
from pymongo.server_type import SERVER_TYPE
from pymongo.topology_description import TOPOLOGY_TYPE, TopologyDescription

_RS_TYPES = (TOPOLOGY_TYPE.ReplicaSetWithPrimary, TOPOLOGY_TYPE.ReplicaSetNoPrimary)


def topology_settings(opts: Any) -> TopologySettings:
    """PyMongo's settings object for a client's options (what TopologyDescription consults)."""
    options = opts.options
    return TopologySettings(
        seeds=list(opts.nodes),
        replica_set_name=options.get("replicaset"),
        local_threshold_ms=options.get("localthresholdms", 15),
        server_selection_timeout=options.get("serverselectiontimeoutms", 30),
        heartbeat_frequency=options.get("heartbeatfrequencyms", 10),
        direct_connection=options.get("directconnection", False),
        load_balanced=options.get("loadbalanced"),
    )


def server_description(facts: Any, error: Exception | None = None) -> ServerDescription:
    """A ServerDescription from libmongoc's facts of one server."""
    hello = Hello(facts.hello) if facts.hello else None
    rtt = facts.round_trip_time_ms / 1000 if facts.round_trip_time_ms >= 0 else None
    sd = ServerDescription(tuple(facts.address), hello, rtt, error)
    # libmongoc's type is the verdict (it also knows RSGhost, and PossiblePrimary, which PyMongo
    # calls Unknown); its clock is the monotonic one time.monotonic() reads. ServerDescription has
    # no setters: these are its own slots.
    server_type = getattr(SERVER_TYPE, facts.server_type, SERVER_TYPE.Unknown)
    if sd.server_type != server_type:
        sd._server_type = server_type
    if facts.last_update_us:
        sd._last_update_time = facts.last_update_us / 1e6
    return sd


def topology_description(facts: Any, settings: TopologySettings) -> TopologyDescription:
    """A TopologyDescription from libmongoc's facts, or from the seeds (all Unknown) before
    libmongoc described the deployment, as PyMongo's client does before it connects."""
    if facts is None:
        return TopologyDescription(
            settings.get_topology_type(), settings.get_server_descriptions(),
            settings.replica_set_name, None, None, settings,
        )
    servers = {}
    for f in facts.servers:
        sd = server_description(f)
        servers[sd.address] = sd
    if not servers:
        # libmongoc's first description comes before it opens the seeds' monitors.
        servers = settings.get_server_descriptions()
    topology_type = getattr(TOPOLOGY_TYPE, facts.topology_type, TOPOLOGY_TYPE.Unknown)
    set_name = settings.replica_set_name
    max_set_version = max_election_id = None
    if topology_type in _RS_TYPES:
        for sd in servers.values():
            set_name = set_name or sd.replica_set_name
            if sd.server_type == SERVER_TYPE.RSPrimary:
                max_set_version, max_election_id = sd.set_version, sd.election_id
    return TopologyDescription(
        topology_type, servers, set_name, max_set_version, max_election_id, settings
    )


def members(td: TopologyDescription, server_type: int) -> set[tuple[str, int]]:
    """The addresses of a replica set's members of one type (empty for other topologies), as
    PyMongo's ``secondaries``/``arbiters`` answer."""
    if td.topology_type not in _RS_TYPES:
        return set()
    return {sd.address for sd in td.known_servers if sd.server_type == server_type}


def primary(td: TopologyDescription) -> tuple[str, int] | None:
    if td.topology_type != TOPOLOGY_TYPE.ReplicaSetWithPrimary:
        return None
    for sd in td.known_servers:
        if sd.server_type == SERVER_TYPE.RSPrimary:
            return sd.address
    return None


__all__ = ["topology_settings", "server_description", "topology_description", "members", "primary"]
