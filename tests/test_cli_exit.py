"""The `plexus` executable skips interpreter teardown but still does what a normal exit
does: buffered output delivered, non-daemon threads finished, atexit handlers run."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import atexit, logging, threading, time
from plexus.cli import exit_now

logging.basicConfig(stream=open({log!r}, "w"), level=logging.INFO)
atexit.register(lambda: print("atexit ran"))
threading.Thread(target=lambda: (time.sleep(0.3), print("thread finished"))).start()
logging.getLogger("plexus").info("logged before exit")
print("buffered " * 2000, end="")
exit_now(3)
"""


def run_python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_exit_now_flushes_joins_and_keeps_the_status(tmp_path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "log.txt"
    done = run_python("-c", PROGRAM.format(log=str(log)))
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stdout.count("buffered") == 2000
    assert "thread finished" in done.stdout
    assert done.stdout.rstrip().endswith("atexit ran")
    assert "logged before exit" in log.read_text()


def test_the_executable_exits_with_the_commands_status() -> None:
    done = run_python("-m", "plexus", "no-such-command")
    assert done.returncode == 2
    assert "invalid choice" in done.stderr
    ok = run_python("-m", "plexus", "--version")
    assert ok.returncode == 0 and ok.stdout.startswith("plexus ")
