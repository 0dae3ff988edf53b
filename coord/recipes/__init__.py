"""coord's recipes: locks, read/write locks, semaphores, leader election, counters and STM (and barriers, queues,
service registry and hot-reloading config), built only on :mod:`coord.client`'s public API, so every recipe also
runs against real etcd.

Each recipe has one asyncio implementation (``client.lock(...)`` on an :class:`coord.AsyncClient`) and a blocking
facade (``client.lock(...)`` on a :class:`coord.Client`, and ``coord.lock(...)`` on the default client). The public
names are re-exported from :mod:`coord`; import them from there.
"""

from coord.recipes._elected import elected, leadership
from coord.recipes._errors import (
    BarrierTimeout,
    ClaimLost,
    ConfigInvalid,
    DiscoveryTimeout,
    ElectionTimeout,
    LeadershipLost,
    LockLost,
    LockNotHeld,
    LockTimeout,
    NoInstanceAvailable,
    NotLeader,
    QueueEmpty,
    TransactionConflict,
)
from coord.recipes.barrier import Barrier, DoubleBarrier, SyncBarrier, SyncDoubleBarrier
from coord.recipes.config import ChangeHook, Config, SyncConfig
from coord.recipes.counter import Counter, SyncCounter
from coord.recipes.election import Campaign, Election, Leader, Leadership
from coord.recipes.election_sync import SyncElection, SyncLeadership, SyncObserver
from coord.recipes.lock import Lock, SyncLock
from coord.recipes.queue import Queue, QueueItem, QueueStats, SyncQueue, SyncQueueItem
from coord.recipes.registry import (
    Instance,
    Registration,
    ServiceChange,
    ServiceView,
    SyncRegistration,
    SyncServiceView,
)
from coord.recipes.rwlock import RWLock, SyncRWLock
from coord.recipes.semaphore import Semaphore, SyncSemaphore
from coord.recipes.stm import STMTransaction, SyncSTMTransaction

__all__ = [
    "Barrier",
    "BarrierTimeout",
    "Campaign",
    "ChangeHook",
    "ClaimLost",
    "Config",
    "ConfigInvalid",
    "Counter",
    "DiscoveryTimeout",
    "DoubleBarrier",
    "Election",
    "ElectionTimeout",
    "Instance",
    "Leader",
    "Leadership",
    "LeadershipLost",
    "Lock",
    "LockLost",
    "LockNotHeld",
    "LockTimeout",
    "NoInstanceAvailable",
    "NotLeader",
    "Queue",
    "QueueEmpty",
    "QueueItem",
    "QueueStats",
    "RWLock",
    "Registration",
    "STMTransaction",
    "Semaphore",
    "ServiceChange",
    "ServiceView",
    "SyncBarrier",
    "SyncConfig",
    "SyncCounter",
    "SyncDoubleBarrier",
    "SyncElection",
    "SyncLeadership",
    "SyncLock",
    "SyncObserver",
    "SyncQueue",
    "SyncQueueItem",
    "SyncRWLock",
    "SyncRegistration",
    "SyncSTMTransaction",
    "SyncSemaphore",
    "SyncServiceView",
    "TransactionConflict",
    "elected",
    "leadership",
]
