"""Client-side helpers shared by the TLS tests: a channel presenting given files, and a direct call to a peer port."""

from __future__ import annotations

import grpc

from coord._proto.raftpb import raft_pb2, raft_pb2_grpc
from coord.testing import TLSFiles


def channel_presenting(endpoint: str, files: TLSFiles) -> grpc.Channel:
    """A new channel trusting ``files.ca`` and presenting ``files`` as its client certificate, on a connection of its
    own (no subchannel shared with earlier channels, so each gets its own handshake)."""
    credentials = grpc.ssl_channel_credentials(files.ca.read_bytes(), files.key.read_bytes(), files.cert.read_bytes())
    return grpc.secure_channel(endpoint, credentials, options=[("grpc.use_local_subchannel_pool", 1)])


def peer_members(port: int, files: TLSFiles) -> raft_pb2.MembersResponse:
    """Peer.Members on a member's peer port at 127.0.0.1:``port``, presenting ``files``; raises grpc.RpcError."""
    with channel_presenting(f"127.0.0.1:{port}", files) as channel:
        response: raft_pb2.MembersResponse = raft_pb2_grpc.PeerStub(channel).Members(
            raft_pb2.MembersRequest(), timeout=5
        )
        return response
