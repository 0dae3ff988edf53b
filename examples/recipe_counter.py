"""A shared counter and a software-transactional transfer, both safe under any number of concurrent writers.

COORD_ENDPOINTS=127.0.0.1:2379 python examples/recipe_counter.py
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import coord


def transfer(tx: coord.SyncSTMTransaction) -> None:
    # Reads see one snapshot; the writes commit only if nothing read changed meanwhile (else this reruns).
    a = int(tx.get("example/accounts/a") or 100)
    b = int(tx.get("example/accounts/b") or 100)
    tx.put("example/accounts/a", str(a - 10))
    tx.put("example/accounts/b", str(b + 10))


if __name__ == "__main__":
    visits = coord.counter("example/visits")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: visits.increment(), range(40)))
        list(pool.map(lambda _: coord.stm(transfer), range(5)))
    print("visits:", visits.get())
    client = coord.default_client()
    a, b = (int(client.get(f"example/accounts/{k}").value or 0) for k in "ab")
    print(f"accounts: a={a} b={b} (total {a + b})")
