"""A session: one lease kept alive in the background, with listeners for its state changes.

Keys written with ``lease=session.lease_id`` vanish when the process dies (after the TTL) or closes the session.

COORD_ENDPOINTS=127.0.0.1:2379 python examples/client_session.py
"""

from __future__ import annotations

import time

import coord


def main() -> None:
    with coord.connect(timeout=5) as client:
        session = client.session(ttl=5)
        session.add_listener(lambda e: print(f"session {e.old.value} -> {e.new.value} (lease {e.lease_id:x})"))
        client.put("example/members/me", "alive", lease=session.lease_id)
        print("registered with lease", hex(session.lease_id), "state", session.state.value)
        time.sleep(2)
        print("lease time to live:", client.time_to_live(session.lease_id).ttl, "s")
        session.close()  # revokes the lease: the registration disappears at once
        print("after close:", client.get("example/members/me").value)


if __name__ == "__main__":
    main()
