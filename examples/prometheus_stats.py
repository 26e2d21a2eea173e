"""Export an AsyncMongoClient's live statistics in Prometheus' text format.

    python -m examples.prometheus_stats [--uri MONGODB_URI] [--port 9187]

serves ``GET /metrics`` (what a Prometheus server scrapes) from the same event loop the
application uses, reading ``client.stats()`` at each request; it needs nothing but asyncio. Without
--uri (or MONGODB_URI) it starts SecantusDB (tests/servers.py) and runs a small workload so that
the figures move. ``render(stats)`` is what an application with its own HTTP framework would call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from asyncmongo import AsyncMongoClient

PREFIX = "asyncmongo"

# name in stats() -> (metric name, type, help)
_SCALARS = {
    "submitted": ("operations_submitted_total", "counter", "Operations submitted to the core."),
    "completed": ("operations_completed_total", "counter", "Operations that returned a result."),
    "failed": ("operations_failed_total", "counter", "Operations that raised an exception."),
    "cancelled": ("operations_cancelled_total", "counter",
                  "Operations cancelled (unsent, result dropped, or loop closed)."),
    "queued": ("operations_queued", "gauge", "Operations waiting for a worker thread."),
    "running": ("operations_running", "gauge", "Operations running on a worker thread."),
    "workers": ("workers", "gauge", "Native worker threads alive."),
    "workers_busy": ("workers_busy", "gauge", "Native worker threads running an operation."),
    "max_workers": ("workers_max", "gauge", "Largest number of worker threads (maxPoolSize)."),
    "sessions": ("sessions", "gauge", "Sessions holding a libmongoc client (explicit, cursors)."),
}
_PER_LOOP = {
    "in_flight": ("loop_in_flight", "gauge", "Operations that will complete on this event loop."),
    "completions": ("loop_completions_total", "counter", "Completions handed to this event loop."),
    "wakeups": ("loop_wakeups_total", "counter", "Wake-ups of this event loop by worker threads."),
    "drains": ("loop_drains_total", "counter", "Drains of this event loop's completion queue."),
}


def render(stats: dict[str, Any], client_label: str = "default") -> str:
    """The statistics as Prometheus' text exposition format (version 0.0.4)."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> str:
        full = f"{PREFIX}_{name}"
        lines.append(f"# HELP {full} {help_text}")
        lines.append(f"# TYPE {full} {kind}")
        return full

    for key, (name, kind, help_text) in _SCALARS.items():
        full = family(name, kind, help_text)
        lines.append(f'{full}{{client="{client_label}"}} {stats[key]}')
    for key, (name, kind, help_text) in _PER_LOOP.items():
        full = family(name, kind, help_text)
        for i, loop in enumerate(stats["loops"]):
            labels = f'client="{client_label}",loop="{i}",wakeup="{loop["wakeup"]}"'
            lines.append(f"{full}{{{labels}}} {loop[key]}")
    return "\n".join(lines) + "\n"


async def serve_metrics(client: AsyncMongoClient, host: str, port: int) -> asyncio.AbstractServer:
    """A minimal HTTP/1.1 server answering GET /metrics (404 otherwise)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if path == b"/metrics":
                body = render(client.stats()).encode()
                status, ctype = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
            else:
                body, status, ctype = b"not found\n", "404 Not Found", "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
                         f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


async def main(uri: str, port: int) -> None:
    async with AsyncMongoClient(uri) as client:
        server = await serve_metrics(client, "127.0.0.1", port)
        print(f"metrics on http://127.0.0.1:{port}/metrics (Ctrl-C to stop)", flush=True)
        coll = client.metrics_demo.items
        async with server:
            while True:  # a workload, so that the figures move
                await coll.insert_one({"n": 1})
                await asyncio.gather(*(coll.find_one({}) for _ in range(20)))
                await asyncio.sleep(0.5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uri", default=os.environ.get("MONGODB_URI"))
    parser.add_argument("--port", type=int, default=9187)
    args = parser.parse_args()
    server_process = None
    if args.uri is None:
        from tests.servers import ServerProcess

        server_process = ServerProcess().start()
        args.uri = server_process.uri
    try:
        asyncio.run(main(args.uri, args.port))
    except KeyboardInterrupt:
        pass
    finally:
        if server_process is not None:
            server_process.stop()
