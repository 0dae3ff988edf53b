"""Service registry: two instances register, a client discovers and load-balances, one drains, one leaves.

COORD_ENDPOINTS=127.0.0.1:2379 python examples/recipe_registry.py
"""

from __future__ import annotations

import time

import coord


def main() -> None:
    with coord.connect(timeout=5) as a, coord.connect(timeout=5) as b, coord.connect(timeout=5) as caller:
        api = caller.discover("example-api")

        @api.on_change
        def changed(change: coord.ServiceChange) -> None:
            print("instances now:", [f"{i.address} ({i.status})" for i in change.instances])

        first = a.register("example-api", "10.0.0.1:8080", metadata={"zone": "a"}, ttl=5)
        second = b.register("example-api", "10.0.0.2:8080", metadata={"zone": "b"}, ttl=5)
        api.wait_ready(timeout=10, count=2)
        print("round robin:", [api.pick().address for _ in range(4)])
        second.set_status("draining")  # still listed, no longer picked
        time.sleep(0.5)
        print("while draining:", [api.pick().address for _ in range(2)])
        second.close()  # deregistered at once
        first.close()
        time.sleep(0.5)
        api.close()


if __name__ == "__main__":
    main()
