"""The `plexus` command line: one sub-command per module in `plexus.cli.commands`.

Each module there exposes `register(subparsers)`, which adds its parser and sets
`func=run` where `run(args) -> int` is the exit status. New commands need no edit here.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import logging
import os
import pkgutil
import sys
import threading
from typing import NoReturn

# OpenMP worker threads spin for a while after each parallel region; in a swarm of
# processes on one machine they would steal the cores of whichever process computes
# next. Make idle workers sleep (read by libgomp when torch is first imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from plexus import __version__
from plexus.errors import PlexusError

log = logging.getLogger("plexus")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plexus",
        description="Pool GPUs and CPUs into one network that runs large language models.",
    )
    parser.add_argument("--version", action="version", version=f"plexus {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from plexus.cli import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"plexus.cli.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO"),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except PlexusError as exc:
        print(f"plexus: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def entry() -> NoReturn:
    """The `plexus` executable: `main()`, then a quick exit."""
    exit_now(main())


def exit_now(status: int) -> NoReturn:
    """Leave the process without tearing the interpreter down. Freeing every module and
    object torch and transformers imported takes 1.5-2 s of CPU per process on a 2-core
    machine (more when a local swarm's servers all stop at once), after everything that
    matters is done: the command has returned, its ledger commits are durable, and
    this runs what a normal exit would (non-daemon threads joined, atexit handlers,
    logging flushed) before `os._exit`."""
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # includes logging.shutdown(), registered by logging itself
    for stream in (sys.stdout, sys.stderr):
        # A closed stream or a broken pipe: there is nothing more to deliver.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    entry()
