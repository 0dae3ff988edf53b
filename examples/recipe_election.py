"""Leader election: among all processes running this, one leads; kill it and another takes over within the TTL.

COORD_ENDPOINTS=127.0.0.1:2379 python examples/recipe_election.py   # run it in two terminals, then Ctrl-C one
"""

from __future__ import annotations

import os
import threading

import coord


@coord.elected("example/scheduler", ttl=5)
def schedule(rounds: int) -> str:
    leadership = coord.leadership()  # the leadership this call runs under
    print(f"pid {os.getpid()} leads, epoch {leadership.epoch}")
    for n in range(rounds):
        if leadership.wait_lost(timeout=1):  # a blocking body is signalled, not interrupted
            return "lost"  # discarded: @elected campaigns again and reruns the function
        coord.default_client().txn([leadership.guard()], [coord.Put("example/plan", f"round {n}")])
    return f"pid {os.getpid()} finished {rounds} rounds"  # returning resigns


def watch_leaders(stop: threading.Event) -> None:
    with coord.election("example/scheduler").observe() as observer:
        while not stop.is_set():
            try:
                leader = observer.next(timeout=0.5)
            except TimeoutError:
                continue
            print("leader now:", leader.value.decode() if leader else "nobody")


if __name__ == "__main__":
    stop = threading.Event()
    threading.Thread(target=watch_leaders, args=(stop,), daemon=True).start()
    print(schedule(5))
    stop.set()
