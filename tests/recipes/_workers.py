"""Worker processes for the multi-process recipe tests: ``python -m tests.recipes._workers <scenario> <args>``.

Every scenario is bounded (a number of iterations, each with a timeout) except ``elect``, which leads until the test
kills it. Logs are appended one whole line per ``write`` with O_APPEND, so lines of concurrent workers never mix.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import coord


def append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def lock(endpoint: str, name: str, counter: str, log: str, iterations: str) -> None:
    """Increment the number in ``counter`` (read, pause, write) under the lock; log each token."""
    path = Path(counter)
    with coord.connect(endpoint, timeout=10) as client:
        for _ in range(int(iterations)):
            with client.lock(name, timeout=60) as held:
                value = int(path.read_text() or "0")
                time.sleep(0.005)  # widen the window in which an unprotected increment would be lost
                path.write_text(str(value + 1))
                append(Path(log), f"{held.token} {os.getpid()}")


def semaphore(endpoint: str, name: str, limit: str, log: str, iterations: str) -> None:
    """Log ``+`` on entering and ``-`` on leaving a semaphore slot."""
    with coord.connect(endpoint, timeout=10) as client:
        for _ in range(int(iterations)):
            with client.semaphore(name, int(limit), timeout=60):
                append(Path(log), f"+ {os.getpid()}")
                time.sleep(0.03)
                append(Path(log), f"- {os.getpid()}")


def rw(endpoint: str, name: str, log: str, iterations: str, modes: str) -> None:
    """Alternate read and write holds as ``modes`` says (e.g. ``rrw``), logging ``R+``/``R-``/``W+``/``W-``."""
    with coord.connect(endpoint, timeout=10) as client:
        rwlock = client.rwlock(name, timeout=60)
        for i in range(int(iterations)):
            mode = modes[i % len(modes)]
            with rwlock.read() if mode == "r" else rwlock.write():
                append(Path(log), f"{mode.upper()}+ {os.getpid()}")
                time.sleep(0.02)
                append(Path(log), f"{mode.upper()}- {os.getpid()}")


def elect(endpoint: str, name: str, ttl: str, log: str) -> None:
    """Lead forever: while leader, write ``"<epoch> <pid> <n>"`` to the key ``acts`` fenced by the leadership."""
    with coord.connect(endpoint, timeout=5) as client:

        @client.elected(name, ttl=int(ttl), value=str(os.getpid()))
        def lead() -> None:
            leadership = coord.leadership()
            assert isinstance(leadership, coord.SyncLeadership)
            n = 0
            while leadership.is_leader:
                ok = client.txn([leadership.guard()], [coord.Put("acts", f"{leadership.epoch} {os.getpid()} {n}")])
                append(Path(log), f"{leadership.epoch} {os.getpid()} {n} {ok.succeeded}")
                n += 1
                leadership.wait_lost(timeout=0.05)

        lead()


SCENARIOS = {"lock": lock, "semaphore": semaphore, "rw": rw, "elect": elect}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
