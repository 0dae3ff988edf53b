"""coord server: a Raft-replicated key-value store that speaks the etcd v3 API."""
