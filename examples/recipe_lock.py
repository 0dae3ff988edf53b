"""A distributed lock: one holder at a time across every process, and writes fenced by the lock's token.

Start several at once to see them take turns:

COORD_ENDPOINTS=127.0.0.1:2379 python examples/recipe_lock.py & python examples/recipe_lock.py
"""

from __future__ import annotations

import asyncio
import os

import coord


async def main() -> None:
    async with coord.AsyncClient(timeout=5) as client:
        for _ in range(3):
            # ttl: if this process dies, the lock is freed after 5 s; timeout: give up waiting after 30 s.
            async with client.lock("example/jobs", ttl=5, timeout=30) as lock:
                print(f"pid {os.getpid()} holds the lock (fencing token {lock.token})")
                # Applied only while we still hold the lock, however late the request reaches the server.
                result = await client.txn([lock.guard()], [coord.Put("example/jobs-state", f"pid {os.getpid()}")])
                print("fenced write applied:", result.succeeded)
                await asyncio.sleep(0.5)  # if the lock were lost here, this task would be cancelled
        print("last writer:", (await client.get("example/jobs-state")).value)


if __name__ == "__main__":
    asyncio.run(main())
