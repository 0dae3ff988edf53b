"""Multi-version key-value store on LMDB, with etcd's revision and request semantics."""

from coord.server.mvcc.store import (
    KEY_TOO_LONG,
    Event,
    MvccError,
    MvccReader,
    MvccWriter,
    RangeResult,
    key_fits,
    range_end_of,
)

__all__ = ["KEY_TOO_LONG", "Event", "MvccError", "MvccReader", "MvccWriter", "RangeResult", "key_fits", "range_end_of"]
