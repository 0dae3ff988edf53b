"""coord's recipes: locks, read/write locks, semaphores, leader election, counters and STM (and barriers, queues,
service registry and hot-reloading config), built only on :mod:`coord.client`'s public API, so every recipe also
runs against real etcd.

Each recipe has one asyncio implementation (``client.lock(...)`` on an :class:`coord.AsyncClient`) and a blocking
facade (``client.lock(...)`` on a :class:`coord.Client`, and ``coord.lock(...)`` on the default client). The public
names are re-exported from :mod:`coord`; import them from there.
"""

from coord.recipes._elected import elected, leadership
from coord.recipes._errors import (
    ElectionTimeout,
    LeadershipLost,
    LockLost,
    LockNotHeld,
    LockTimeout,
    NotLeader,
    TransactionConflict,
)
from coord.recipes.counter import Counter, SyncCounter
from coord.recipes.election import Campaign, Election, Leader, Leadership
from coord.recipes.election_sync import SyncElection, SyncLeadership, SyncObserver
from coord.recipes.lock import Lock, SyncLock
from coord.recipes.rwlock import RWLock, SyncRWLock
from coord.recipes.semaphore import Semaphore, SyncSemaphore
from coord.recipes.stm import STMTransaction, SyncSTMTransaction

__all__ = [
    "Campaign",
    "Counter",
    "Election",
    "ElectionTimeout",
    "Leader",
    "Leadership",
    "LeadershipLost",
    "Lock",
    "LockLost",
    "LockNotHeld",
    "LockTimeout",
    "NotLeader",
    "RWLock",
    "STMTransaction",
    "Semaphore",
    "SyncCounter",
    "SyncElection",
    "SyncLeadership",
    "SyncLock",
    "SyncObserver",
    "SyncRWLock",
    "SyncSTMTransaction",
    "SyncSemaphore",
    "TransactionConflict",
    "elected",
    "leadership",
]
