"""Hot-reloading config: a dataclass follows the keys under apps/example/; an invalid value is rejected.

COORD_ENDPOINTS=127.0.0.1:2379 python examples/recipe_config.py
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import coord


@dataclass
class Settings:
    port: int = 8080
    debug: bool = False
    hosts: list[str] = field(default_factory=list)


def main() -> None:
    with coord.connect(timeout=5) as client:
        client.delete("apps/example/", prefix=True)
        client.put("apps/example/port", "9000")
        settings = client.config("apps/example/", Settings)
        print("start:", settings.value)
        settings.on_change(lambda new: print("changed:", new))
        settings.on_error(lambda error: print("rejected:", error))

        # Two keys in one transaction: the live object sees both at once.
        client.txn([], [coord.Put("apps/example/debug", "true"), coord.Put("apps/example/hosts", '["a", "b"]')])
        time.sleep(0.5)
        client.put("apps/example/port", "not a number")  # invalid: the last good value stays
        time.sleep(0.5)
        print("after a bad write:", settings.port, "last error:", settings.last_error)
        client.put("apps/example/port", "9001")
        time.sleep(0.5)
        print("end:", settings.value)
        settings.close()


if __name__ == "__main__":
    main()
