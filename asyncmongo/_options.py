"""Client options: PyMongo's arguments, validated by PyMongo's own rules, rendered as a libmongoc URI.

libmongoc owns URI parsing, topology, pooling, auth and TLS; this module only checks what the user
gave (so errors read as PyMongo's) and refuses, clearly, any option libmongoc 1.23 cannot honour.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions, DatetimeConversion, TypeRegistry
from pymongo import common, uri_parser
from pymongo.errors import ConfigurationError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference, make_read_preference, read_pref_mode_from_name
from pymongo.write_concern import WriteConcern

from asyncmongo import _core
from asyncmongo.monitoring import listeners

DEFAULT_MAX_POOL_SIZE = 100
# PyMongo's maxPoolSize=0 means "no limit"; threads are not free, so "no limit" is this many workers.
UNLIMITED_POOL_SIZE = 1024

# lower-case option -> (libmongoc URI name, how PyMongo's validated value is rendered)
_SECONDS_AS_MS = "seconds-as-ms"
_URI_OPTIONS = {
    "appname": ("appname", "str"),
    "maxpoolsize": ("maxPoolSize", "int"),
    "minpoolsize": ("minPoolSize", "int"),
    "serverselectiontimeoutms": ("serverSelectionTimeoutMS", _SECONDS_AS_MS),
    "connecttimeoutms": ("connectTimeoutMS", _SECONDS_AS_MS),
    "sockettimeoutms": ("socketTimeoutMS", _SECONDS_AS_MS),
    "heartbeatfrequencyms": ("heartbeatFrequencyMS", _SECONDS_AS_MS),
    # PyMongo validates this one in milliseconds (the others of its kind into seconds).
    "localthresholdms": ("localThresholdMS", "ms"),
    "maxidletimems": ("maxIdleTimeMS", _SECONDS_AS_MS),
    "waitqueuetimeoutms": ("waitQueueTimeoutMS", _SECONDS_AS_MS),
    "serverselectiontryonce": ("serverSelectionTryOnce", "bool"),
    "w": ("w", "str"),
    "wtimeoutms": ("wtimeoutMS", "int"),
    "journal": ("journal", "bool"),
    "readpreference": ("readPreference", "str"),
    "readpreferencetags": ("readPreferenceTags", "tags"),
    "maxstalenessseconds": ("maxStalenessSeconds", "int"),
    "readconcernlevel": ("readConcernLevel", "str"),
    "retrywrites": ("retryWrites", "bool"),
    "retryreads": ("retryReads", "bool"),
    "replicaset": ("replicaSet", "str"),
    "directconnection": ("directConnection", "bool"),
    "loadbalanced": ("loadBalanced", "bool"),
    "tls": ("tls", "bool"),
    "ssl": ("tls", "bool"),
    "tlscafile": ("tlsCAFile", "str"),
    "tlscertificatekeyfile": ("tlsCertificateKeyFile", "str"),
    "tlscertificatekeyfilepassword": ("tlsCertificateKeyFilePassword", "str"),
    "tlsallowinvalidcertificates": ("tlsAllowInvalidCertificates", "bool"),
    "tlsallowinvalidhostnames": ("tlsAllowInvalidHostnames", "bool"),
    "tlsinsecure": ("tlsInsecure", "bool"),
    "tlsdisableocspendpointcheck": ("tlsDisableOCSPEndpointCheck", "bool"),
    "compressors": ("compressors", "list"),
    "zlibcompressionlevel": ("zlibCompressionLevel", "int"),
    "authsource": ("authSource", "str"),
    "authmechanism": ("authMechanism", "str"),
    "authmechanismproperties": ("authMechanismProperties", "props"),
    "srvservicename": ("srvServiceName", "str"),
    "srvmaxhosts": ("srvMaxHosts", "int"),
}
# Options timeoutMS deprecates: ignored once it is set (the specification), so kept from libmongoc.
_DEPRECATED_BY_TIMEOUT = ("sockettimeoutms", "waitqueuetimeoutms", "wtimeoutms")
# Options that shape decoding on the Python side.
_CODEC_OPTIONS = {"uuidrepresentation", "unicode_decode_error_handler", "tzinfo", "datetime_conversion"}
# asyncmongo's own: the completion wake-up path ("eventfd", the default, or "threadsafe").
_OWN_OPTIONS = {"wakeup"}
_UUID_REPRESENTATIONS = {
    "unspecified": UuidRepresentation.UNSPECIFIED,
    "standard": UuidRepresentation.STANDARD,
    "pythonlegacy": UuidRepresentation.PYTHON_LEGACY,
    "javalegacy": UuidRepresentation.JAVA_LEGACY,
    "csharplegacy": UuidRepresentation.CSHARP_LEGACY,
}


def _render(kind: str, value: Any) -> list[str]:
    if kind == _SECONDS_AS_MS:
        # PyMongo validates milliseconds into seconds; None/0 mean "no timeout" (0 for libmongoc).
        return [str(0 if not value else round(value * 1000))]
    if kind == "ms":
        return [str(round(value))]
    if kind == "bool":
        return ["true" if value else "false"]
    if kind == "list":
        return [",".join(value)]
    if kind == "tags":
        return [",".join(f"{k}:{v}" for k, v in tag_set.items()) for tag_set in value]
    if kind == "props":
        return [",".join(f"{k}:{v}" for k, v in value.items())]
    return [str(value)]


def _format_host(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    if host.endswith(".sock"):
        return quote(host, safe="")
    return f"{host}:{port}"


class ClientOptions:
    """Everything AsyncMongoClient's arguments say, checked, in the forms each layer needs."""

    def __init__(
        self,
        host: Any,
        port: Any,
        document_class: Any,
        tz_aware: Any,
        connect: Any,
        type_registry: Any,
        kwargs: dict[str, Any],
        default_host: str = "localhost",
        default_port: int = 27017,
    ) -> None:
        if host is None:
            host = default_host
        if isinstance(host, str):
            host = [host]
        if port is None:
            port = default_port
        if not isinstance(port, int) or isinstance(port, bool):
            raise TypeError("port must be an instance of int")

        nodes: list[tuple[str, int]] = []
        options: dict[str, Any] = {}
        self.username = self.password = self.database = None
        self.srv_uri: str | None = None
        for entity in host:
            if not isinstance(entity, str):
                raise TypeError(f"host must be a string or list of strings, not {type(entity)}")
            if entity.startswith("mongodb+srv://"):
                # Resolving SRV records is libmongoc's job; PyMongo's parser would resolve them here.
                self.srv_uri = entity
                continue
            if "://" in entity:
                # warn=True: like PyMongo, an unknown or invalid URI option is warned about and ignored.
                res = uri_parser.parse_uri(entity, port, validate=True, warn=True, normalize=False)
                nodes.extend(res["nodelist"])
                self.username = res["username"] or self.username
                self.password = res["password"] or self.password
                self.database = res["database"] or self.database
                options.update({k.lower(): v for k, v in res["options"].items()})
            else:
                nodes.extend(uri_parser.split_hosts(entity, default_port=port))
        if self.srv_uri and nodes:
            raise ConfigurationError("a mongodb+srv:// URI cannot be combined with other hosts")
        if not nodes and not self.srv_uri:
            raise ConfigurationError("need to specify at least one host")

        if document_class is not None:
            kwargs["document_class"] = document_class
        if tz_aware is not None:
            kwargs["tz_aware"] = tz_aware
        if connect is not None:
            kwargs["connect"] = connect
        if type_registry is not None:
            kwargs["type_registry"] = type_registry

        own: dict[str, Any] = {}
        for key, value in kwargs.items():
            lower = key.lower()
            if lower in _OWN_OPTIONS:
                own[lower] = value
                continue
            name, validated = common.validate(key, value)
            options[name.lower()] = validated

        self.wakeup = own.get("wakeup", os.environ.get("ASYNCMONGO_WAKEUP", "eventfd"))
        if self.wakeup not in ("eventfd", "threadsafe"):
            raise ConfigurationError(f"wakeup must be 'eventfd' or 'threadsafe', not {self.wakeup!r}")
        self.connect = bool(options.pop("connect", True))
        self.codec_options = self._codec_options(options)

        for key in ("username", "password"):
            if key in options:
                setattr(self, key, options.pop(key))
        # Validated above by PyMongo's rules (a list or tuple of listeners): command listeners are
        # served by the core's command APM hook, server/heartbeat/topology ones by its SDAM hook.
        self.listeners = listeners(options.pop("event_listeners", None))
        # Driver metadata a library appended (AsyncMongoClient.append_metadata): kept, not sent.
        self.driver_info: list[Any] = []
        self.command_listeners = self.listeners.command
        self.event_listeners = self.listeners.all
        # Client Side Operations Timeout (PyMongo validated it to seconds): asyncmongo's own, not
        # libmongoc's. Set at the client level it governs every operation, so the options it
        # deprecates never apply: libmongoc is not given them (socketTimeoutMS would cut the
        # core's socket waits, wtimeoutMS would go in every write concern).
        self.timeout: float | None = options.pop("timeoutms", None)
        self.wait_queue_timeout: float | None = (
            options.get("waitqueuetimeoutms") or None if self.timeout is None else None
        )
        unsupported = sorted(k for k in options if k not in _URI_OPTIONS)
        if unsupported:
            raise ConfigurationError(
                f"asyncmongo does not support the option(s) {', '.join(unsupported)} "
                f"(libmongoc {_core.MONGOC_VERSION} has no equivalent)"
            )
        self.options = options
        self.retry_reads = options.get("retryreads", True) is not False
        self.retry_writes = options.get("retrywrites", True) is not False
        pool = options.get("maxpoolsize", DEFAULT_MAX_POOL_SIZE)
        if pool and options.get("minpoolsize", 0) > pool:
            raise ValueError("minPoolSize must be smaller or equal to maxPoolSize")
        self.max_pool_size = pool
        self.max_workers = pool if pool else UNLIMITED_POOL_SIZE
        self.nodes = nodes
        self.read_preference = self._read_preference(options)
        self.write_concern = WriteConcern(
            w=options.get("w"), wtimeout=options.get("wtimeoutms"), j=options.get("journal")
        )
        self.read_concern = ReadConcern(options.get("readconcernlevel"))
        self.mongoc_uri = self._mongoc_uri()

    @staticmethod
    def _codec_options(options: dict[str, Any]) -> CodecOptions:
        kw: dict[str, Any] = {}
        if "document_class" in options:
            kw["document_class"] = options.pop("document_class")
        if "tz_aware" in options:
            kw["tz_aware"] = options.pop("tz_aware")
        if "type_registry" in options:
            registry = options.pop("type_registry")
            kw["type_registry"] = registry if registry is not None else TypeRegistry()
        if "uuidrepresentation" in options:
            rep = options.pop("uuidrepresentation")
            kw["uuid_representation"] = _UUID_REPRESENTATIONS.get(str(rep).lower(), rep)
        if "unicode_decode_error_handler" in options:
            kw["unicode_decode_error_handler"] = options.pop("unicode_decode_error_handler")
        if "tzinfo" in options:
            kw["tzinfo"] = options.pop("tzinfo")
        if "datetime_conversion" in options:
            conv = options.pop("datetime_conversion")
            kw["datetime_conversion"] = DatetimeConversion[conv] if isinstance(conv, str) else conv
        return CodecOptions(**kw)

    @staticmethod
    def _read_preference(options: dict[str, Any]):
        mode = options.get("readpreference")
        if mode is None:
            return ReadPreference.PRIMARY
        return make_read_preference(
            read_pref_mode_from_name(mode),
            options.get("readpreferencetags"),
            options.get("maxstalenessseconds", -1),
        )

    def _mongoc_uri(self) -> str:
        params: list[str] = []
        deprecated = _DEPRECATED_BY_TIMEOUT if self.timeout is not None else ()
        for key, value in self.options.items():
            if value is None or key in deprecated:
                continue
            name, kind = _URI_OPTIONS[key]
            params.extend(f"{name}={quote(v, safe=':,')}" for v in _render(kind, value))
        if (
            not self.srv_uri
            and len(self.nodes) == 1
            and not {"directconnection", "replicaset", "loadbalanced"} & self.options.keys()
        ):
            # PyMongo discovers the topology from a lone seed (directConnection defaults to false);
            # libmongoc 1.23 connects directly to a lone seed unless told directConnection=false.
            params.append("directConnection=false")
        if self.srv_uri:
            base = self.srv_uri
            sep = "&" if "?" in base else ("?" if base.count("/") > 2 else "/?")
            return base + (sep + "&".join(params) if params else "")
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        hosts = ",".join(_format_host(h, p) for h, p in self.nodes)
        db = quote(self.database, safe="") if self.database else ""
        query = "?" + "&".join(params) if params else ""
        return f"mongodb://{auth}{hosts}/{db}{query}"


__all__ = ["ClientOptions"]
