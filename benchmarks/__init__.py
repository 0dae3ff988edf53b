"""Benchmarks that compare coord-server with real etcd on the same machine (not part of the test suite)."""
