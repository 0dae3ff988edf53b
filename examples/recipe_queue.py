"""A work queue: priorities, a delayed item, ack on success, nack with retry, and the dead-letter queue.

COORD_ENDPOINTS=127.0.0.1:2379 python examples/recipe_queue.py
"""

from __future__ import annotations

import coord


def main() -> None:
    with coord.connect(timeout=5) as client:
        jobs = client.queue("example-jobs", visibility_timeout=10, max_deliveries=2)
        jobs.put({"resize": "cat.png"})
        jobs.put({"resize": "urgent.png"}, priority=-1)  # lower number: delivered first
        jobs.put({"resize": "later.png"}, delay=1.0)  # invisible for a second
        jobs.put("poison")  # fails every time: dead-lettered after 2 deliveries
        while True:
            try:
                item = jobs.get(timeout=3)
            except coord.QueueEmpty:
                break
            try:
                with item:  # ack on success, nack (and redelivery) when the body raises
                    if item.value == "poison":
                        raise ValueError("cannot process")
                    print(f"processed {item.value} (delivery {item.deliveries})")
            except ValueError as exc:
                print(f"failed {item.value!r}: {exc}")
        dead = jobs.dead_letters
        letter = dead.get(timeout=5)
        print(f"dead letter: {letter.value!r}, last error {letter.error!r}")
        letter.ack()
        dead.close()
        jobs.close()


if __name__ == "__main__":
    main()
