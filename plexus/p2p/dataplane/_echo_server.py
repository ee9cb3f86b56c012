"""A small data-plane server for tests and benchmarks.

    python -m plexus.p2p.dataplane._echo_server [--port 0] [--seed HEX] [--send-timeout S] ...

Prints one JSON line {"host", "port", "peer_id", "pid"} on stdout once listening, then
serves until killed. Message types:
  echo    -> the same fields and tensors
  add     -> fields {"value": v}: every tensor plus v
  whoami  -> fields {"peer_id": the caller's authenticated peer id}
  sleep   -> waits fields["seconds"] (at most 60), replies "slept"
  fail    -> raises RuntimeError (answered INTERNAL)
  refuse  -> raises ProtocolError(fields["message"], fields["code"])
  stats   -> {"rss_kib", "connections", "sockets", "handshakes_failed"}; with fields
             {"trim": true} first collects garbage and returns freed heap to the OS
             (malloc_trim), so RSS measures live memory rather than allocator caches
  discard -> one-way sink: counts bytes; reply {"count", "bytes"} on "discarded"
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import gc
import json
import os
import sys

import trio

from plexus.errors import ProtocolError
from plexus.identity import Identity
from plexus.p2p.dataplane.limits import Limits
from plexus.p2p.dataplane.message import Message
from plexus.p2p.dataplane.router import Router
from plexus.p2p.dataplane.server import DataplaneServer, serve_dataplane


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of a process in KiB, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc status")


def trim_heap() -> None:
    """Collect garbage and give freed malloc memory back to the OS (glibc only)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: RSS keeps its caches
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def build_router(server_box: list[DataplaneServer]) -> Router:
    router = Router()
    sink = {"count": 0, "bytes": 0}

    @router.route("echo")
    async def echo(peer_id: str, message: Message) -> Message:
        return Message("echo", message.fields, message.tensors)

    @router.route("add")
    async def add(peer_id: str, message: Message) -> Message:
        value = message.fields.get("value", 1)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ProtocolError("value must be a number", 9)
        return Message("added", {}, [tensor + value for tensor in message.tensors])

    @router.route("whoami")
    async def whoami(peer_id: str, message: Message) -> Message:
        return Message("you", {"peer_id": peer_id})

    @router.route("sleep")
    async def sleep(peer_id: str, message: Message) -> Message:
        seconds = message.fields.get("seconds", 0)
        if not isinstance(seconds, int | float):
            raise ProtocolError("seconds must be a number", 9)
        await trio.sleep(min(max(float(seconds), 0.0), 60.0))
        return Message("slept")

    @router.route("fail")
    async def fail(peer_id: str, message: Message) -> Message:
        raise RuntimeError("asked to fail")

    @router.route("refuse")
    async def refuse(peer_id: str, message: Message) -> Message:
        raise ProtocolError(str(message.fields.get("message")), int(message.fields.get("code", 9)))

    @router.route("discard")
    async def discard(peer_id: str, message: Message) -> Message:
        sink["count"] += 1
        sink["bytes"] += sum(tensor.nbytes for tensor in message.tensors)
        return Message("discarded", dict(sink))

    @router.route("stats")
    async def stats(peer_id: str, message: Message) -> Message:
        server = server_box[0]
        if message.fields.get("trim"):
            trim_heap()
        return Message(
            "stats",
            {
                "rss_kib": rss_kib(),
                "connections": len(server.connections),
                "sockets": server.sockets_open,
                "handshakes_failed": server.handshakes_failed,
            },
        )

    return router


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", help="64 hex digits: a fixed identity (default: random)")
    parser.add_argument("--handshake-timeout", type=float, default=5.0)
    parser.add_argument("--idle-timeout", type=float, default=300.0)
    parser.add_argument("--read-timeout", type=float, default=30.0)
    parser.add_argument("--send-timeout", type=float, default=30.0)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--max-connections", type=int, default=512)
    parser.add_argument("--max-message", type=int, default=Limits.max_message)
    parser.add_argument("--max-buffered", type=int, default=Limits.max_buffered)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    identity = Identity.generate(bytes.fromhex(args.seed) if args.seed else os.urandom(32))
    limits = Limits(
        handshake_timeout=args.handshake_timeout,
        idle_timeout=args.idle_timeout,
        read_timeout=args.read_timeout,
        send_timeout=args.send_timeout,
        max_in_flight=args.max_in_flight,
        max_connections=args.max_connections,
        max_message=args.max_message,
        max_buffered=args.max_buffered,
    )
    box: list[DataplaneServer] = []
    router = build_router(box)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(serve_dataplane, limits=limits),
            identity,
            args.host,
            args.port,
            router,
        )
        box.append(server)
        host, port = server.addresses[0]
        print(
            json.dumps({"host": host, "port": port, "peer_id": server.peer_id, "pid": os.getpid()}),
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    try:
        trio.run(run, parse_args(argv))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
