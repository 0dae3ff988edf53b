"""Member-to-member traffic: Raft messages and snapshots over gRPC (transport out, service in)."""
