"""A read/write lock: readers share it, a writer has it alone, and a waiting writer holds back later readers.

COORD_ENDPOINTS=127.0.0.1:2379 python examples/recipe_rwlock.py
"""

from __future__ import annotations

import threading
import time

import coord


def reader(n: int, shared: dict[str, int]) -> None:
    with coord.rwlock("example/catalog").read(timeout=30):
        shared["readers"] += 1
        print(f"reader {n} reads version {coord.default_client().get('example/catalog-version').value!r}")
        time.sleep(0.3)  # other readers are inside at the same time
        shared["readers"] -= 1


def writer(shared: dict[str, int]) -> None:
    with coord.rwlock("example/catalog").write(timeout=30) as lock:
        if shared["readers"]:  # never: no reader is inside while the writer is
            shared["violations"] += 1
        # Fenced: the write applies only while this process still holds the write lock.
        coord.default_client().txn([lock.guard()], [coord.Put("example/catalog-version", str(lock.token))])
        print(f"writer published version {lock.token}")


def main() -> None:
    coord.default_client().put("example/catalog-version", "0")
    shared = {"readers": 0, "violations": 0}
    threads = [threading.Thread(target=reader, args=(n, shared)) for n in range(3)]
    threads.append(threading.Thread(target=writer, args=(shared,)))
    threads += [threading.Thread(target=reader, args=(n, shared)) for n in range(3, 5)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(timeout=60)
    if shared["violations"]:
        raise SystemExit("a reader was inside while the writer was")
    print("done")


if __name__ == "__main__":
    main()
