"""Subprocess workers for the queue crash tests (run as ``python -m tests.recipes._queue_workers ...``).

Each prints one line per step, flushed at once, so the test can see how far it got before killing it:

- ``produce ENDPOINT QUEUE TAG COUNT PAUSE``: puts ``TAG-0`` ... and prints ``put TAG-i`` after each put returned.
- ``consume ENDPOINT QUEUE NAME MODE``: prints ``claimed V`` for each item it claims; MODE ``hang`` then stops
  (holding the item until killed); MODE ``work`` processes it (prints ``processing V``), then acks it together with a
  write of ``done/V`` (the ack's own transaction) and prints ``acked V`` (``lost V`` when its claim lapsed first).
- ``register ENDPOINT SERVICE ADDRESS TTL``: registers an instance, prints ``registered ID``, then sleeps until
  killed.
"""

from __future__ import annotations

import sys
import time

import coord
from coord.recipes.queue import QueueEmpty, SyncQueue

VISIBILITY_TIMEOUT = 2


def produce(endpoint: str, name: str, tag: str, count: int, pause: float) -> None:
    with coord.connect(endpoint, timeout=5) as client:
        jobs = SyncQueue(client, name)
        for i in range(count):
            jobs.put(f"{tag}-{i}")
            print(f"put {tag}-{i}", flush=True)
            time.sleep(pause)


def consume(endpoint: str, name: str, worker: str, mode: str) -> None:
    with coord.connect(endpoint, timeout=5) as client:
        jobs = SyncQueue(client, name, visibility_timeout=VISIBILITY_TIMEOUT, max_deliveries=None)
        deadline = time.monotonic() + 120  # never outlive a broken test
        while time.monotonic() < deadline:
            try:
                item = jobs.get(timeout=5)
            except QueueEmpty:
                continue
            print(f"claimed {item.value}", flush=True)
            if mode == "hang":
                time.sleep(120)
                return
            print(f"processing {item.value}", flush=True)
            time.sleep(0.02)
            try:
                item.ack(ops=[coord.Put(f"done/{item.value}", worker)])
            except coord.ClaimLost:
                # On a loaded machine the 2 s lease can lapse: the item went back to the queue, nothing was written,
                # and it is delivered again. A real consumer carries on, and so does this one.
                print(f"lost {item.value}", flush=True)
                continue
            print(f"acked {item.value}", flush=True)


def registered(endpoint: str, service: str, address: str, ttl: int) -> None:
    from coord.recipes.registry import register

    with coord.connect(endpoint, timeout=5) as client, register(client, service, address, ttl=ttl) as registration:
        print(f"registered {registration.instance_id}", flush=True)
        time.sleep(120)


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "produce":
        produce(args[0], args[1], args[2], int(args[3]), float(args[4]))
    elif command == "consume":
        consume(args[0], args[1], args[2], args[3])
    elif command == "register":
        registered(args[0], args[1], args[2], int(args[3]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
