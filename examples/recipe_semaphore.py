"""A semaphore: at most two workers (threads here, or processes anywhere) use the resource at a time.

COORD_ENDPOINTS=127.0.0.1:2379 python examples/recipe_semaphore.py
"""

from __future__ import annotations

import threading
import time

import coord


def worker(n: int) -> None:
    with coord.semaphore("example/gpus", limit=2, timeout=60) as slot:
        print(f"worker {n} got a slot (token {slot.token})")
        time.sleep(0.5)
    print(f"worker {n} released its slot")


if __name__ == "__main__":
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
