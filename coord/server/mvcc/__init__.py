"""Multi-version key-value store on LMDB, with etcd's revision and request semantics."""

from coord.server.mvcc.store import Event, MvccError, MvccReader, MvccWriter, RangeResult, key_fits, range_end_of

__all__ = ["Event", "MvccError", "MvccReader", "MvccWriter", "RangeResult", "key_fits", "range_end_of"]
