"""KV calls: get, range, put, delete, compact, txn. Mixed into :class:`coord.AsyncClient`.

Retry policy: reads and read-only txns are retried on any transient failure (on the next endpoint); puts, deletes
and writing txns only when the failure proves they were not applied (see :mod:`coord.client._retry`). Compaction is
idempotent and retried like a read.
"""

from __future__ import annotations

from collections.abc import Sequence

from coord._proto.etcdserverpb import rpc_pb2
from coord.client._channel import Endpoint, Metadata, Transport
from coord.client._retry import RetryKind
from coord.client.results import CompactResult, DeleteResult, GetResult, Header, PutResult, TxnResult
from coord.client.txn import Compare, Delete, Get, KeyLike, Op, Put, SortOrder, SortTarget, Txn

__all__ = ["KVMixin"]


class KVMixin:
    _transport: Transport

    async def get(
        self,
        key: KeyLike,
        *,
        revision: int = 0,
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        timeout: float | None = None,
    ) -> GetResult:
        """Read one key (``result.value`` is None when it does not exist).

        ``revision`` > 0 reads history (raises CompactedError / FutureRevisionError outside the kept window);
        ``serializable`` reads the answering member's local state without a quorum round (may be stale).
        """
        return await self.range(
            key, revision=revision, serializable=serializable, keys_only=keys_only, count_only=count_only,
            timeout=timeout,
        )  # fmt: skip

    async def range(
        self,
        key: KeyLike,
        range_end: KeyLike | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
        limit: int = 0,
        revision: int = 0,
        sort_order: SortOrder = SortOrder.NONE,
        sort_target: SortTarget = SortTarget.KEY,
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
        min_create_revision: int = 0,
        max_create_revision: int = 0,
        timeout: float | None = None,
    ) -> GetResult:
        """Read a key range with every etcd range option.

        The range is ``[key, range_end)``, or every key with prefix ``key`` (``prefix=True``), or every key >= ``key``
        (``from_key=True``). ``limit`` 0 means no limit; ``result.more`` tells whether the limit cut the answer and
        ``result.count`` counts every match. Raises EmptyKeyError, CompactedError, FutureRevisionError.
        """
        op = Get(
            key, range_end, prefix=prefix, from_key=from_key, limit=limit, revision=revision, sort_order=sort_order,
            sort_target=sort_target, serializable=serializable, keys_only=keys_only, count_only=count_only,
            min_mod_revision=min_mod_revision, max_mod_revision=max_mod_revision,
            min_create_revision=min_create_revision, max_create_revision=max_create_revision,
        )  # fmt: skip
        request = op.to_pb()

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.RangeResponse:
            return await ep.kv.Range(request, timeout=left, metadata=md)

        return GetResult.from_pb(
            await self._transport.call("range", attempt, kind=RetryKind.SAFE, timeout=timeout, require_leader=True)
        )

    async def put(
        self,
        key: KeyLike,
        value: KeyLike,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
        timeout: float | None = None,
    ) -> PutResult:
        """Write one key. Applied at most once: retried only when the failure proves it was not applied.

        Raises LeaseNotFoundError (unknown lease), KeyNotFoundError / ValueProvidedError / LeaseProvidedError (misuse
        of ignore_value / ignore_lease), NoSpaceError, DeadlineExceededError (outcome unknown).
        """
        request = Put(key, value, lease, prev_kv, ignore_value, ignore_lease).to_pb()

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.PutResponse:
            return await ep.kv.Put(request, timeout=left, metadata=md)

        return PutResult.from_pb(
            await self._transport.call("put", attempt, kind=RetryKind.UNSAFE, timeout=timeout, require_leader=True)
        )

    async def delete(
        self,
        key: KeyLike,
        range_end: KeyLike | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> DeleteResult:
        """Delete one key or a range (same range options as :meth:`range`); ``result.deleted`` counts the keys."""
        request = Delete(key, range_end, prefix=prefix, from_key=from_key, prev_kv=prev_kv).to_pb()

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.DeleteRangeResponse:
            return await ep.kv.DeleteRange(request, timeout=left, metadata=md)

        result = await self._transport.call(
            "delete", attempt, kind=RetryKind.UNSAFE, timeout=timeout, require_leader=True
        )
        return DeleteResult.from_pb(result)

    async def txn(
        self,
        compare: Sequence[Compare] = (),
        success: Sequence[Op] = (),
        failure: Sequence[Op] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        """Atomically: if every compare holds, run ``success``, else ``failure``; all writes share one revision.

        Example: ``await client.txn([Value("k") == "v"], [Put("k", "w")], [Get("k")])``. Read-only txns are retried
        like reads. Raises DuplicateKeyError, TooManyOpsError, and the errors of the ops.
        """
        txn = Txn(compare, success, failure)
        request = txn.to_pb()
        kind = RetryKind.SAFE if txn.is_read_only() else RetryKind.UNSAFE

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.TxnResponse:
            return await ep.kv.Txn(request, timeout=left, metadata=md)

        return TxnResult.from_pb(
            await self._transport.call("txn", attempt, kind=kind, timeout=timeout, require_leader=True)
        )

    async def compact(self, revision: int, *, physical: bool = False, timeout: float | None = None) -> CompactResult:
        """Discard history before ``revision``. ``physical`` waits until the space is reclaimed on the members.

        Raises CompactedError when already compacted at or past ``revision``, FutureRevisionError beyond the store.
        """
        request = rpc_pb2.CompactionRequest(revision=revision, physical=physical)

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.CompactionResponse:
            return await ep.kv.Compact(request, timeout=left, metadata=md)

        resp = await self._transport.call("compact", attempt, kind=RetryKind.SAFE, timeout=timeout, require_leader=True)
        return CompactResult(Header.from_pb(resp.header))
