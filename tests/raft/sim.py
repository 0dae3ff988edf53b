"""Deterministic cluster simulator for the Raft core.

N nodes (plus spare nodes that membership changes may add) talk through a seeded network that drops, duplicates,
delays and reorders messages and partitions the cluster; nodes crash and restart, losing everything not yet
persisted (unstable entries, hard state changes, or a Ready persisted but whose messages were never sent). Leaders
also change membership, transfer leadership and compact their logs, so snapshots are sent.

After every step the simulator checks:
- election safety: at most one leader per term (Raft §5.2);
- log matching: persisted entries with the same index and term carry the same data and follow the same term
  (Raft §5.3);
- leader completeness: a new leader's log holds every entry committed before its term (Raft §5.4);
- state machine safety: every node applies the same entry at each index, and snapshots carry the same state
  (Raft §5.4.3);
- commit monotonicity: a node's commit index never goes back, in memory or on disk;
- ReadIndex linearizability: a read index is at least the highest commit index known when the read was asked.
Then the faults heal, and liveness is checked: a leader emerges and a new proposal is applied on every member.

Replay one seed verbosely: ``python -m tests.raft.sim --seed 7 --nodes 3 -v``.
"""

from __future__ import annotations

import argparse
import heapq
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from random import Random

from coord.server.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDropped,
    RawNode,
    Ready,
    StateRole,
)


class InvariantViolation(AssertionError):
    pass


@dataclass
class SimOptions:
    nodes: int = 3
    spares: int = 1
    fault_steps: int = 3000
    heal_rounds: int = 300
    drop: float = 0.05
    duplicate: float = 0.02
    delay: float = 0.03
    membership: bool = True
    snapshots: bool = True
    verbose: bool = False


@dataclass
class Envelope:
    msg: Message
    sender_incarnation: int


@dataclass
class SimNode:
    id: int
    storage: MemoryStorage
    node: RawNode | None = None
    incarnation: int = 0
    retired: bool = False
    applied: int = 0
    digest: int = 0
    conf_state: ConfState = field(default_factory=ConfState)
    last_commit: int = 0
    last_durable_commit: int = 0
    checked_leader_term: int = 0

    @property
    def alive(self) -> bool:
        return self.node is not None and not self.retired


_DIGEST = struct.Struct(">QQ")


class Simulator:
    def __init__(self, seed: int, options: SimOptions) -> None:
        self.seed = seed
        self.opt = options
        self.rng = Random(seed)
        self.steps = 0
        # Flow control varies per seed: one entry per message makes figure-8 style histories (Raft §5.4.2) likely.
        self.max_msg_size = self.rng.choice([1, 1, 64, 1 << 20])
        self.max_inflight = self.rng.choice([1, 4, 64])
        # Mostly the production settings, sometimes without PreVote or CheckQuorum.
        self.pre_vote = self.rng.random() < 0.8
        self.check_quorum = self.rng.random() < 0.8
        self.nodes: dict[int, SimNode] = {}
        voters = list(range(1, options.nodes + 1))
        for node_id in range(1, options.nodes + options.spares + 1):
            if node_id in voters:
                storage = MemoryStorage.bootstrap(ConfState(voters=list(voters)), _DIGEST.pack(1, 0))
            else:
                storage = MemoryStorage()
            self.nodes[node_id] = SimNode(node_id, storage)
            self._start(self.nodes[node_id])
        self.pool: list[Envelope] = []
        self.delayed: list[tuple[int, int, Envelope]] = []  # (release step, seq, envelope), a heap
        self.seq = 0
        self.groups: dict[int, int] | None = None  # partition: node -> group
        self.leaders: dict[int, int] = {}  # term -> leader (election safety)
        self.entries_seen: dict[tuple[int, int], tuple[bytes, int]] = {}  # (index, term) -> (data, prev term)
        self.applied_entries: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)
        self.digests: dict[int, int] = {0: 0, 1: 0}  # index -> state machine digest after applying it
        self.reads: dict[bytes, int] = {}  # ctx -> highest known commit when asked
        self.max_commit = 0
        self.max_applied = 0
        self.proposals = 0
        self.reads_done = 0
        self.counts: dict[str, int] = {}
        self.conf_changes_applied: set[int] = set()

    # -- logging -----------------------------------------------------------------------------------------------

    def log(self, text: str) -> None:
        if self.opt.verbose:
            print(f"[{self.steps:6d}] {text}")

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def fail(self, text: str) -> None:
        raise InvariantViolation(f"{text} (seed {self.seed}, step {self.steps})\n{self.describe()}")

    def describe(self) -> str:
        lines = []
        for sn in self.nodes.values():
            if sn.node is None:
                lines.append(f"  node {sn.id}: down{' (retired)' if sn.retired else ''}")
                continue
            st = sn.node.status()
            lines.append(
                f"  node {sn.id}{' (retired)' if sn.retired else ''}: {st.role.name} term={st.term} lead={st.lead}"
                f" commit={st.commit} applied={st.applied} last={sn.node.raft.log.last_index()}"
                f" voters={st.conf_state.voters} learners={st.conf_state.learners}"
                + "".join(f"\n    {i}: {p}" for i, p in st.progress.items())
            )
        return "\n".join(lines)

    # -- node lifecycle ----------------------------------------------------------------------------------------

    def _start(self, sn: SimNode) -> None:
        snap = sn.storage.snapshot()
        sn.incarnation += 1
        cfg = Config(
            id=sn.id,
            election_tick=6,
            heartbeat_tick=1,
            max_size_per_msg=self.max_msg_size,
            max_inflight_msgs=self.max_inflight,
            applied=snap.metadata.index,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            rng=Random(self.seed * 1000 + sn.id * 10 + sn.incarnation),
        )
        sn.node = RawNode(cfg, sn.storage)
        sn.applied = snap.metadata.index
        sn.digest = _DIGEST.unpack(snap.data)[1] if snap.data else 0
        sn.conf_state = sn.storage.initial_state()[1]
        sn.last_commit = sn.node.raft.log.committed

    def crash(self, sn: SimNode) -> None:
        assert sn.node is not None
        if sn.node.has_ready() and self.rng.random() < 0.5:
            rd = sn.node.ready()
            self._persist(sn, rd)  # durable, but the node dies before sending or applying
            self.log(f"crash {sn.id} after persisting a ready ({len(rd.messages)} messages lost)")
        else:
            self.log(f"crash {sn.id}")
        sn.node = None
        self.count("crash")

    def restart(self, sn: SimNode) -> None:
        self._start(sn)
        self.log(f"restart {sn.id} (snapshot {sn.applied}, last {sn.storage.last_index()})")
        self.count("restart")

    # -- ready handling ----------------------------------------------------------------------------------------

    def _persist(self, sn: SimNode, rd: Ready) -> None:
        st = sn.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            prev_term = st.term(rd.entries[0].index - 1)
            st.append(rd.entries)
            for e in rd.entries:
                self._check_log_matching(e.index, e.term, e.data, prev_term)
                prev_term = e.term
        if rd.hard_state is not None:
            if rd.hard_state.commit < sn.last_durable_commit:
                self.fail(f"node {sn.id}: durable commit went back {sn.last_durable_commit} -> {rd.hard_state.commit}")
            sn.last_durable_commit = rd.hard_state.commit
            st.set_hard_state(rd.hard_state)

    def _check_log_matching(self, index: int, term: int, data: bytes, prev_term: int) -> None:
        key = (index, term)
        seen = self.entries_seen.setdefault(key, (data, prev_term))
        if seen != (data, prev_term):
            self.fail(f"log matching: entry {key} differs: {seen} vs {(data, prev_term)}")

    def process_ready(self, sn: SimNode) -> None:
        node = sn.node
        assert node is not None
        rd = node.ready()
        if rd.soft_state is not None:
            self.log(f"node {sn.id} is {rd.soft_state.role.name} (term {node.raft.term}, leader {rd.soft_state.lead})")
        self._persist(sn, rd)
        for m in rd.messages:
            self.send(sn, m)
        if rd.snapshot is not None:
            meta = rd.snapshot.metadata
            sn.applied = meta.index
            sn.digest = _DIGEST.unpack(rd.snapshot.data)[1]
            sn.conf_state = meta.conf_state
            self._check_digest(sn)
            self.log(f"node {sn.id} restored snapshot at {meta.index}")
        for e in rd.committed_entries:
            if e.index != sn.applied + 1:
                self.fail(f"node {sn.id} applies {e.index} after {sn.applied}")
            seen = self.applied_entries.setdefault(e.index, (e.term, e.data))
            self.max_applied = max(self.max_applied, e.index)
            if seen != (e.term, e.data):
                self.fail(f"state machine safety: node {sn.id} applies {(e.term, e.data)} at {e.index}, saw {seen}")
            sn.digest = zlib.crc32(e.data, zlib.crc32(e.term.to_bytes(8, "big"), sn.digest))
            sn.applied = e.index
            self._check_digest(sn)
            if e.type == EntryType.CONF_CHANGE:
                cc = ConfChange.decode(e.data)
                lead_before = node.raft.lead
                sn.conf_state = node.apply_conf_change(cc)
                self.log(f"node {sn.id} applied {cc.type.name} {cc.node_id} at {e.index} -> {sn.conf_state}")
                if e.index not in self.conf_changes_applied:
                    self.conf_changes_applied.add(e.index)
                    self.count(f"applied {cc.type.name}")
                    if cc.type == ConfChangeType.REMOVE_NODE and lead_before == cc.node_id:
                        self.count("leader removed")
                if cc.type == ConfChangeType.REMOVE_NODE and not self.nodes[cc.node_id].retired:
                    self.nodes[cc.node_id].retired = True
                    self.log(f"node {cc.node_id} retired")
        for rs in rd.read_states:
            asked = self.reads.pop(rs.request_ctx, None)
            if asked is not None:
                if rs.index < asked:
                    self.fail(f"read index {rs.index} for {rs.request_ctx!r} < commit {asked} known when asked")
                self.reads_done += 1
        node.advance(rd)

    def _check_digest(self, sn: SimNode) -> None:
        seen = self.digests.setdefault(sn.applied, sn.digest)
        if seen != sn.digest:
            self.fail(f"state machine safety: node {sn.id} state at {sn.applied} differs")

    # -- network -----------------------------------------------------------------------------------------------

    def send(self, sn: SimNode, m: Message) -> None:
        if self.rng.random() < self.opt.drop:
            self._dropped(sn.id, sn.incarnation, m)
            return
        env = Envelope(m, sn.incarnation)
        if self.rng.random() < self.opt.delay:
            self.seq += 1
            heapq.heappush(self.delayed, (self.steps + self.rng.randrange(10, 300), self.seq, env))
        else:
            self.pool.append(env)
        if self.rng.random() < self.opt.duplicate:
            self.pool.append(env)

    def _dropped(self, sender: int, incarnation: int, m: Message) -> None:
        self._report_snapshot(sender, incarnation, m, False)

    def _report_snapshot(self, sender: int, incarnation: int, m: Message, ok: bool) -> None:
        if m.type != MessageType.SNAP:
            return
        sn = self.nodes[sender]
        if sn.alive and sn.incarnation == incarnation and sn.node is not None:
            sn.node.report_snapshot(m.to, ok)

    def connected(self, a: int, b: int) -> bool:
        return self.groups is None or self.groups.get(a) == self.groups.get(b)

    def deliver(self, env: Envelope) -> None:
        m = env.msg
        target = self.nodes[m.to]
        if not target.alive or not self.connected(m.from_, m.to):
            self._dropped(m.from_, env.sender_incarnation, m)
            return
        assert target.node is not None
        target.node.step(m)
        if m.type == MessageType.SNAP:
            self.count("snapshots delivered")
        self._report_snapshot(m.from_, env.sender_incarnation, m, True)

    # -- invariants checked after every step ------------------------------------------------------------------

    def check(self) -> None:
        for sn in self.nodes.values():
            if sn.node is None:
                continue
            r = sn.node.raft
            committed = r.log.committed
            if committed < sn.last_commit:
                self.fail(f"node {sn.id}: commit went back {sn.last_commit} -> {committed}")
            sn.last_commit = committed
            if committed > self.max_commit:
                self.max_commit = committed
            if r.role == StateRole.LEADER:
                known = self.leaders.setdefault(r.term, sn.id)
                if known != sn.id:
                    self.fail(f"election safety: {known} and {sn.id} both lead term {r.term}")
                if sn.checked_leader_term != r.term:
                    sn.checked_leader_term = r.term
                    self._check_leader_completeness(sn)

    def _check_leader_completeness(self, sn: SimNode) -> None:
        assert sn.node is not None
        log = sn.node.raft.log
        term = sn.node.raft.term
        first = log.first_index()
        for index in range(first, self.max_applied + 1):
            entry = self.applied_entries.get(index)
            if entry is None or entry[0] >= term:
                continue
            if log.term_or_zero(index) != entry[0]:
                self.fail(f"leader completeness: leader {sn.id} of term {term} lacks committed entry {index}")
        self.count("leaders")

    # -- events ------------------------------------------------------------------------------------------------

    def live(self) -> list[SimNode]:
        return [sn for sn in self.nodes.values() if sn.alive]

    def leader(self) -> SimNode | None:
        best: SimNode | None = None
        best_term = -1
        for sn in self.live():
            assert sn.node is not None
            if sn.node.raft.role == StateRole.LEADER and sn.node.raft.term > best_term:
                best, best_term = sn, sn.node.raft.term
        return best

    def step_fault(self) -> None:
        rng = self.rng
        r = rng.random()
        live = self.live()
        if r < 0.26:
            if live:
                sn = rng.choice(live)
                assert sn.node is not None
                sn.node.tick()
        elif r < 0.60:
            while self.delayed and self.delayed[0][0] <= self.steps:
                self.pool.append(heapq.heappop(self.delayed)[2])
            if self.pool:
                # Mostly in order, but any of the oldest few may overtake the others.
                self.deliver(self.pool.pop(rng.randrange(min(4, len(self.pool)))))
        elif r < 0.90:
            ready = [sn for sn in live if sn.node is not None and sn.node.has_ready()]
            if ready:
                self.process_ready(rng.choice(ready))
        elif r < 0.96:
            if live:
                self.propose(rng.choice(live))
        elif r < 0.994:
            if live:
                self.read(rng.choice(live))
        else:
            self.rare_event()

    def propose(self, sn: SimNode) -> None:
        assert sn.node is not None
        self.proposals += 1
        try:
            sn.node.propose(f"{sn.id}:{self.proposals}".encode())
        except ProposalDropped:
            self.count("dropped proposals")

    def read(self, sn: SimNode) -> None:
        assert sn.node is not None
        ctx = f"read-{self.steps}".encode()
        try:
            sn.node.read_index(ctx)
        except ProposalDropped:
            return
        self.reads[ctx] = self.max_commit

    def rare_event(self) -> None:
        rng = self.rng
        r = rng.random()
        candidates = [sn for sn in self.nodes.values() if not sn.retired]
        if r < 0.15:
            live = self.live()
            if len(live) > 1:
                self.crash(rng.choice(live))
        elif r < 0.4:
            dead = [sn for sn in candidates if sn.node is None]
            if dead:
                self.restart(rng.choice(dead))
        elif r < 0.5:
            ids = [sn.id for sn in candidates]
            self.groups = {i: rng.randrange(2) for i in ids}
            self.log(f"partition {self.groups}")
            self.count("partition")
        elif r < 0.6:
            self.groups = None
            self.log("heal partition")
        elif r < 0.75:
            if self.opt.membership:
                self.change_membership()
        elif r < 0.9:
            if self.opt.snapshots and candidates:
                self.compact(rng.choice(candidates))
        else:
            self.transfer()

    def change_membership(self) -> None:
        ld = self.leader()
        if ld is None:
            return
        assert ld.node is not None
        conf = ld.node.raft.conf_state()
        spares = [sn.id for sn in self.nodes.values() if not sn.retired and sn.id not in conf.voters + conf.learners]
        spares = [i for i in spares if i > self.opt.nodes]
        rng = self.rng
        if conf.learners and rng.random() < 0.5:
            cc = ConfChange(ConfChangeType.ADD_VOTER, rng.choice(conf.learners))
        elif spares and rng.random() < 0.6:
            kind = ConfChangeType.ADD_LEARNER if rng.random() < 0.7 else ConfChangeType.ADD_VOTER
            cc = ConfChange(kind, rng.choice(spares))
        elif len(conf.voters) >= 3:
            cc = ConfChange(ConfChangeType.REMOVE_NODE, rng.choice(conf.voters))
        else:
            return
        try:
            ld.node.propose_conf_change(cc)
            self.log(f"leader {ld.id} proposes {cc.type.name} {cc.node_id}")
            self.count("conf changes proposed")
        except ProposalDropped as e:
            self.log(f"conf change dropped: {e.reason}")

    def compact(self, sn: SimNode) -> None:
        st = sn.storage
        snap_index = st.snapshot().metadata.index
        if sn.node is None or sn.applied <= snap_index or sn.applied > st.last_index():
            return
        data = _DIGEST.pack(sn.applied, sn.digest)
        st.create_snapshot(sn.applied, sn.conf_state, data)
        keep = self.rng.randrange(4)
        if sn.applied - keep > snap_index:
            st.compact(sn.applied - keep)
        self.log(f"node {sn.id} compacts at {sn.applied} (keeping {keep})")
        self.count("compactions")

    def transfer(self) -> None:
        ld = self.leader()
        if ld is None:
            return
        assert ld.node is not None
        others = [v for v in ld.node.raft.conf_state().voters if v != ld.id]
        if others:
            target = self.rng.choice(others)
            ld.node.transfer_leader(target)
            self.log(f"transfer leadership {ld.id} -> {target}")
            self.count("transfers")

    # -- healing and liveness ----------------------------------------------------------------------------------

    def sync_round(self) -> None:
        """Tick every live node once, then exchange messages until quiet: a reliable, fast network."""
        for sn in self.live():
            assert sn.node is not None
            sn.node.tick()
        for _ in range(100):
            busy = False
            for sn in self.live():
                assert sn.node is not None
                if sn.node.has_ready():
                    self.process_ready(sn)
                    busy = True
            pool, self.pool = self.pool + [env for _, _, env in sorted(self.delayed)], []
            self.delayed = []
            for env in pool:
                self.deliver(env)
                busy = True
            self.steps += 1
            self.check()
            if not busy:
                return

    def heal_and_check_liveness(self) -> None:
        self.groups = None
        self.opt.drop = 0.0
        self.opt.duplicate = 0.0
        self.opt.delay = 0.0
        for sn in self.nodes.values():
            if sn.node is None and not sn.retired:
                self.restart(sn)
        self.check()
        token = b"liveness-check"
        proposed_by: SimNode | None = None
        for _ in range(self.opt.heal_rounds):
            self.sync_round()
            ld = self.leader()
            if ld is None or ld.node is None:
                continue
            if proposed_by is not ld:
                try:
                    ld.node.propose(token)
                    proposed_by = ld
                except ProposalDropped:
                    continue
            members = ld.node.raft.conf_state()
            member_ids = [i for i in members.voters + members.learners if not self.nodes[i].retired]
            index = next((i for i, (_, d) in self.applied_entries.items() if d == token), None)
            if index is not None and all(self.nodes[i].applied >= index for i in member_ids):
                self.log(f"liveness: leader {ld.id}, token applied at {index} on {member_ids}")
                return
        self.fail("liveness: no leader committed and applied a proposal on every member after healing")

    def run(self) -> None:
        for _ in range(self.opt.fault_steps):
            self.steps += 1
            self.step_fault()
            self.check()
        self.heal_and_check_liveness()


def replay_command(seed: int, nodes: int) -> str:
    return f"python -m tests.raft.sim --seed {seed} --nodes {nodes} -v"


def run_seed(seed: int, nodes: int, verbose: bool = False) -> Simulator:
    sim = Simulator(seed, SimOptions(nodes=nodes, verbose=verbose))
    try:
        sim.run()
    except AssertionError as e:
        raise InvariantViolation(f"{e}\nreplay with: {replay_command(seed, nodes)}") from e
    return sim


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=None, help="replay one seed")
    parser.add_argument("--seeds", type=int, default=100, help="run seeds 0..N-1 (without --seed)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else list(range(args.seeds))
    start = time.perf_counter()
    steps = 0
    for seed in seeds:
        try:
            sim = run_seed(seed, args.nodes, args.verbose)
        except InvariantViolation as e:
            print(f"FAIL seed {seed}: {e}", file=sys.stderr)
            return 1
        steps += sim.steps
        if args.verbose or args.seed is not None:
            print(
                f"seed {seed}: {sim.steps} steps, {sim.proposals} proposals, {sim.max_applied} applied,"
                f" {sim.reads_done} reads, {sim.counts}"
            )
    elapsed = time.perf_counter() - start
    print(f"{len(seeds)} seeds, {steps} steps in {elapsed:.2f}s ({steps / elapsed:.0f} steps/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
