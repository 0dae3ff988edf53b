"""KV basics with the blocking client: put, get, range, a compare-and-swap transaction, history.

Run against any etcd v3 endpoint (coord-server or etcd): COORD_ENDPOINTS=127.0.0.1:2379 python examples/client_kv.py
"""

from __future__ import annotations

import coord
from coord import Get, ModRevision, Put


def main() -> None:
    with coord.connect(timeout=5) as client:  # endpoints from COORD_ENDPOINTS
        first = client.put("example/config/color", "blue")
        client.put("example/config/size", "large")
        print("revision after put:", first.revision)

        for kv in client.range("example/config/", prefix=True).kvs:
            print(f"{kv.key.decode()} = {kv.value.decode()} (version {kv.version})")

        # Compare-and-swap: change the color only if nobody changed it since we read it.
        current = client.get("example/config/color").kv
        assert current is not None
        result = client.txn(
            compare=[ModRevision("example/config/color") == current.mod_revision],
            success=[Put("example/config/color", "green")],
            failure=[Get("example/config/color")],
        )
        print("swapped" if result.succeeded else "lost the race", "at revision", result.revision)
        print("color at the first revision:", client.get("example/config/color", revision=first.revision).value)
        client.delete("example/", prefix=True)


if __name__ == "__main__":
    main()
