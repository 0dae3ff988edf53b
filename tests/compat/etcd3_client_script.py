"""Run inside the python-etcd3 virtualenv (not by pytest): exercise python-etcd3 0.12 against host:port.

Prints one JSON object with everything the client returned. Kept free of coord imports: python-etcd3 ships its own
generated etcd protobufs, which cannot share a process with coord's.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import etcd3  # type: ignore[import-not-found]


def meta(m: Any) -> dict[str, Any] | None:
    if m is None:
        return None
    return {
        "key": m.key.decode(),
        "create": m.create_revision,
        "mod": m.mod_revision,
        "version": m.version,
        "lease": m.lease_id,
    }


def kvs(items: Any) -> list[Any]:
    return [[None if v is None else v.decode(), meta(m)] for v, m in items]


def error(exc: BaseException) -> dict[str, str]:
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    return {
        "type": type(exc).__name__,
        "code": str(code()) if callable(code) else "",
        "details": str(details()) if callable(details) else str(exc),
    }


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    client = etcd3.client(host=host, port=port, timeout=10)
    tx = client.transactions
    out: dict[str, Any] = {}
    out["put"] = [client.put(k, v).header.revision for k, v in (("/t/a", "1"), ("/t/b", "2"), ("/t/c", "3"))]
    resp = client.put("/t/a", "1b", prev_kv=True)
    out["put_prev_kv"] = [resp.header.revision, resp.prev_kv.value.decode(), resp.prev_kv.version]
    value, m = client.get("/t/a")
    out["get"] = [value.decode(), meta(m)]
    out["get_missing"] = list(client.get("/t/missing"))
    out["get_prefix"] = kvs(client.get_prefix("/t/"))
    out["get_prefix_sorted"] = kvs(client.get_prefix("/t/", sort_order="descend", sort_target="value"))
    out["get_prefix_keys_only"] = kvs(client.get_prefix("/t/", keys_only=True))
    out["get_range"] = kvs(client.get_range("/t/a", "/t/c"))
    out["get_all"] = kvs(client.get_all())
    out["replace_ok"] = client.replace("/t/c", "3", "33")
    out["replace_fail"] = client.replace("/t/c", "3", "333")
    ok, responses = client.transaction(
        compare=[tx.value("/t/c") == "33", tx.version("/t/c") > 0, tx.create("/t/missing") == 0],
        success=[tx.put("/t/d", "4"), tx.get("/t/c"), tx.delete("/t/b")],
        failure=[tx.put("/t/failed", "x")],
    )
    out["txn_success"] = [
        ok,
        kvs(responses[1]),
        responses[0].response_put.header.revision,
        responses[2].response_delete_range.deleted,
    ]
    ok, responses = client.transaction(
        compare=[tx.mod("/t/a") < 2],
        success=[tx.put("/t/never", "x")],
        failure=[tx.get("/t/a"), tx.put("/t/e", "5")],
    )
    out["txn_failure"] = [ok, kvs(responses[0]), responses[1].response_put.header.revision]
    try:
        client.transaction(compare=[], success=[tx.put("/t/dup", "1"), tx.put("/t/dup", "2")], failure=[])
        out["txn_duplicate"] = "no error"
    except Exception as exc:
        out["txn_duplicate"] = error(exc)
    out["delete"] = client.delete("/t/a")
    out["delete_missing"] = client.delete("/t/a")
    out["delete_prefix"] = client.delete_prefix("/t/").deleted
    out["get_after"] = kvs(client.get_prefix("/t/"))
    out["members"] = [[mem.name, list(mem.peer_urls), list(mem.client_urls)] for mem in client.members]
    status = client.status()
    out["status"] = {"db_size_positive": status.db_size > 0, "leader_is_member": status.leader is not None}
    print(json.dumps(out, sort_keys=True))
    client.close()


if __name__ == "__main__":
    main()
