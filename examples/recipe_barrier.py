"""Barriers: a coordinator holds a gate while workers wait; then three workers start and finish a batch together.

COORD_ENDPOINTS=127.0.0.1:2379 python examples/recipe_barrier.py
"""

from __future__ import annotations

import threading
import time

import coord


def worker(n: int) -> None:
    with coord.connect(timeout=5) as client:
        client.barrier("example-deploy").wait(timeout=30)  # blocks while the gate is held
        print(f"worker {n}: gate open")
        with client.double_barrier("example-batch", 3, ttl=5):  # starts once all 3 are in
            print(f"worker {n}: working")
            time.sleep(0.2 * n)
        print(f"worker {n}: everyone finished")  # leaves once all 3 are done


def main() -> None:
    with coord.connect(timeout=5) as client:
        gate = client.barrier("example-deploy")
        gate.hold()
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        time.sleep(1)
        print("coordinator: releasing the gate")
        gate.release()
        for t in threads:
            t.join()


if __name__ == "__main__":
    main()
