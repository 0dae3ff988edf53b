"""Watch a prefix with the asyncio client while another task writes to it.

COORD_ENDPOINTS=127.0.0.1:2379 python examples/client_watch.py
"""

from __future__ import annotations

import asyncio

import coord


async def writer(client: coord.AsyncClient) -> None:
    for i in range(3):
        await client.put(f"example/jobs/{i}", f"job {i}")
    await client.delete("example/jobs/", prefix=True)


async def main() -> None:
    async with coord.AsyncClient(timeout=5) as client:
        # The watch is established when watch() returns: nothing written afterwards is missed, even across member
        # failures (the watcher resumes from its last revision on another endpoint).
        watcher = await client.watch("example/jobs/", prefix=True)
        task = asyncio.create_task(writer(client))
        seen = 0
        async for event in watcher:
            print(event.type.value, event.key.decode(), event.value.decode(), "@", event.revision)
            seen += 1
            if seen == 6:  # 3 puts + 3 deletes
                break
        await watcher.cancel()
        await task


if __name__ == "__main__":
    asyncio.run(main())
