"""Small builders for unit tests of the Raft core: nodes with a given log, and an in-memory network."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from coord.server.raft import Config, ConfState, Entry, HardState, MemoryStorage, Message, MessageType
from coord.server.raft.raft import Raft


def storage_with(
    voters: Iterable[int], terms: Iterable[int] = (), learners: Iterable[int] = (), term: int = 0
) -> MemoryStorage:
    """A bootstrapped storage (snapshot at 1/1) followed by entries of the given terms at indexes 2, 3, ..."""
    st = MemoryStorage.bootstrap(ConfState(list(voters), list(learners)))
    st.append([Entry(term=t, index=i + 2, data=f"e{i + 2}".encode()) for i, t in enumerate(terms)])
    st.set_hard_state(HardState(term=max([1, term, *terms]), commit=1))
    return st


def new_raft(
    node_id: int,
    voters: Iterable[int] = (1, 2, 3),
    terms: Iterable[int] = (),
    learners: Iterable[int] = (),
    storage: MemoryStorage | None = None,
    term: int = 0,
    **options: object,
) -> Raft:
    st = storage or storage_with(voters, terms, learners, term)
    cfg = Config(id=node_id, rng=random.Random(node_id), **options)  # type: ignore[arg-type]
    return Raft(cfg, st)


def take(r: Raft, kind: MessageType | None = None) -> list[Message]:
    """The node's outgoing messages (of one type, if given); all are removed from its queue."""
    msgs, r.msgs = r.msgs, []
    return [m for m in msgs if kind is None or m.type == kind]


class Network:
    """Delivers messages between ``Raft`` instances synchronously; links can be cut."""

    def __init__(self, *nodes: Raft) -> None:
        self.nodes = {n.id: n for n in nodes}
        self.cut: set[tuple[int, int]] = set()
        self.filter: Callable[[Message], bool] | None = None
        self.delivered: list[Message] = []

    def isolate(self, node: int) -> None:
        for other in self.nodes:
            if other != node:
                self.cut |= {(node, other), (other, node)}

    def heal(self) -> None:
        self.cut.clear()

    def step(self, node: int, m: Message) -> None:
        self.nodes[node].step(m)
        self.flush()

    def flush(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            pending = [m for n in self.nodes.values() for m in take(n)]
            if not pending:
                return
            for m in pending:
                if (m.from_, m.to) in self.cut or m.to not in self.nodes:
                    continue
                if self.filter is not None and not self.filter(m):
                    continue
                self.delivered.append(m)
                self.nodes[m.to].step(m)
        raise AssertionError("network did not settle")

    def campaign(self, node: int) -> None:
        self.step(node, Message(MessageType.HUP, from_=node))

    def propose(self, node: int, data: bytes) -> None:
        self.step(node, Message(MessageType.PROP, from_=node, entries=[Entry(data=data)]))
