"""What every servicer shares: the response header and turning refusals into gRPC statuses."""

from __future__ import annotations

from typing import NoReturn

import grpc

from coord._proto.etcdserverpb import rpc_pb2
from coord.errors import ErrorSpec
from coord.server.node import Node


class Headers:
    """Fills ResponseHeader as etcd does: cluster and member id, raft term, and the current revision if unset."""

    def __init__(self, node: Node, cluster_id: int) -> None:
        self._node = node
        self.cluster_id = cluster_id
        self.member_id = node.member_id

    def make(self, revision: int) -> rpc_pb2.ResponseHeader:
        """A complete header at ``revision``."""
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id, member_id=self.member_id, revision=revision, raft_term=self._node.term
        )

    def fill(self, header: rpc_pb2.ResponseHeader, with_revision: bool = True) -> None:
        """Complete ``header``; ``with_revision=False`` leaves the revision unset, as etcd's Cluster service does."""
        header.cluster_id = self.cluster_id
        header.member_id = self.member_id
        header.raft_term = self._node.term
        if with_revision and header.revision == 0:
            with self._node.read() as view:
                header.revision = view.current_revision


async def abort(context: grpc.aio.ServicerContext[object, object], spec: ErrorSpec) -> NoReturn:
    """End the call with etcd's status for ``spec``."""
    await context.abort(spec.code, spec.message)
    raise AssertionError("unreachable: abort raises")


async def not_yet(context: grpc.aio.ServicerContext[object, object], what: str) -> NoReturn:
    """Refuse an RPC this server version does not serve, with UNIMPLEMENTED and a message naming it."""
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"coord: {what} is not supported by this server version yet")
    raise AssertionError("unreachable: abort raises")
