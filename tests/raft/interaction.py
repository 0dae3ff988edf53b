"""A tiny interaction language for Raft scenarios, in the style of etcd-io/raft's ``testdata/*.txt``.

A scenario file is a sequence of blocks::

    # comments and blank lines between blocks are kept as they are
    command arg key=value
    ----
    the full trace the command produced (never contains blank lines)

``run_scenario`` executes the commands and returns the file regenerated with the actual traces, so a test compares
it with the file and ``COORD_REWRITE_SCENARIOS=1`` (or ``python -m tests.raft.interaction --rewrite``) rewrites it.

Commands (node ids are ints; ``ID...`` means one or more, default all):
  add-nodes N [voters=1,2,3] [learners=4] [join] [pre-vote=true] [check-quorum=true] [max-size=N] [max-inflight=N]
  campaign ID | tick ID [N] | tick-election ID | tick-heartbeat ID
  propose ID DATA | propose-conf-change ID (add-voter|add-learner|remove) NODE | read-index ID CTX
  transfer-leader ID TARGET | report-snapshot ID TO ok|fail | report-unreachable ID TO
  process-ready ID... | deliver-msgs [ID...] [drop] | stabilize [ID...]
  isolate ID | recover | compact ID INDEX | restart ID | raft-state | raft-log ID | status ID
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from coord.server.raft import (
    NONE,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDropped,
    RawNode,
    Ready,
)

TESTDATA = Path(__file__).parent / "testdata"


def fmt_entry(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE:
        cc = ConfChange.decode(e.data)
        return f"{e.term}/{e.index} ConfChange {cc.type.name} {cc.node_id}"
    return f"{e.term}/{e.index} {e.data.decode()!r}" if e.data else f"{e.term}/{e.index} <empty>"


def fmt_msg(m: Message) -> str:
    parts = [f"{m.from_}->{m.to} {m.type.name} Term:{m.term}"]
    if m.type in (MessageType.APP, MessageType.VOTE, MessageType.PRE_VOTE):
        parts.append(f"Log:{m.log_term}/{m.index}")
    if m.type in (MessageType.APP, MessageType.HEARTBEAT):
        parts.append(f"Commit:{m.commit}")
    if m.type in (MessageType.APP_RESP, MessageType.READ_INDEX_RESP):
        parts.append(f"Index:{m.index}")
    if m.reject:
        parts.append("Rejected")
        if m.type == MessageType.APP_RESP:
            parts.append(f"(Hint:{m.reject_hint} HintTerm:{m.log_term})")
    if m.entries:
        parts.append("Entries:[" + ", ".join(fmt_entry(e) for e in m.entries) + "]")
    if m.snapshot is not None:
        meta = m.snapshot.metadata
        cs = meta.conf_state
        parts.append(f"Snapshot:{meta.term}/{meta.index} voters={cs.voters} learners={cs.learners}")
    if m.context:
        parts.append(f"Context:{m.context.decode()!r}")
    return " ".join(parts)


@dataclass
class Node:
    id: int
    storage: MemoryStorage
    config: Config
    raw: RawNode
    applied: list[str] = field(default_factory=list)


class Env:
    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}
        self.queue: list[Message] = []
        self.isolated: set[int] = set()
        self.out: list[str] = []

    def p(self, line: str) -> None:
        self.out.append(line)

    # -- commands ----------------------------------------------------------------------------------------------

    def add_nodes(self, args: list[str], kw: dict[str, str]) -> None:
        count = int(args[0])
        first = max(self.nodes, default=0) + 1
        ids = list(range(first, first + count))
        voters = [int(x) for x in kw["voters"].split(",")] if "voters" in kw else ids
        learners = [int(x) for x in kw["learners"].split(",")] if "learners" in kw else []
        for node_id in ids:
            storage = MemoryStorage() if "join" in args else MemoryStorage.bootstrap(ConfState(voters, learners))
            cfg = Config(
                id=node_id,
                pre_vote=kw.get("pre-vote", "true") == "true",
                check_quorum=kw.get("check-quorum", "true") == "true",
                max_size_per_msg=int(kw.get("max-size", 1 << 20)),
                max_inflight_msgs=int(kw.get("max-inflight", 256)),
                rng=random.Random(node_id),
            )
            self.nodes[node_id] = Node(node_id, storage, cfg, RawNode(cfg, storage))
            if "join" in args:
                self.p(f"node {node_id}: joining with an empty log and no membership")
            else:
                self.p(f"node {node_id}: voters={voters} learners={learners}")

    def restart(self, node_id: int) -> None:
        n = self.nodes[node_id]
        n.config.applied = n.storage.snapshot().metadata.index
        n.raw = RawNode(n.config, n.storage)
        n.applied = []
        self.queue = [m for m in self.queue if m.to != node_id and m.from_ != node_id]
        hs = n.storage.hard_state
        self.p(f"restarted {node_id}: term={hs.term} vote={hs.vote} commit={hs.commit} last={n.storage.last_index()}")

    def process_ready(self, node_id: int) -> bool:
        n = self.nodes[node_id]
        if not n.raw.has_ready():
            return False
        rd = n.raw.ready()
        self.print_ready(node_id, rd)
        if rd.snapshot is not None:
            n.storage.apply_snapshot(rd.snapshot)
        n.storage.append(rd.entries)
        if rd.hard_state is not None:
            n.storage.set_hard_state(rd.hard_state)
        self.queue.extend(rd.messages)
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                cs = n.raw.apply_conf_change(ConfChange.decode(e.data))
                self.p(f"  applied conf change at {e.index}: voters={cs.voters} learners={cs.learners}")
        n.raw.advance(rd)
        return True

    def print_ready(self, node_id: int, rd: Ready) -> None:
        self.p(f"> {node_id} handling Ready")
        if rd.soft_state is not None:
            self.p(f"  Lead:{rd.soft_state.lead} State:{rd.soft_state.role.name}")
        if rd.hard_state is not None:
            hs = rd.hard_state
            self.p(f"  HardState Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}")
        if rd.snapshot is not None:
            meta = rd.snapshot.metadata
            self.p(f"  Snapshot {meta.term}/{meta.index} voters={meta.conf_state.voters}")
        if rd.entries:
            self.p("  Entries:")
            self.out.extend(f"    {fmt_entry(e)}" for e in rd.entries)
        if rd.messages:
            self.p("  Messages:")
            self.out.extend(f"    {fmt_msg(m)}" for m in rd.messages)
        if rd.committed_entries:
            self.p("  CommittedEntries:")
            self.out.extend(f"    {fmt_entry(e)}" for e in rd.committed_entries)
        for rs in rd.read_states:
            self.p(f"  ReadState Index:{rs.index} Ctx:{rs.request_ctx.decode()!r}")

    def deliver(self, targets: list[int], drop: bool) -> int:
        keep, sent = [], 0
        for m in self.queue:
            if m.to not in targets and m.to not in self.isolated and m.from_ not in self.isolated:
                keep.append(m)
                continue
            sent += 1
            if drop or m.to in self.isolated or m.from_ in self.isolated:
                self.p(f"dropped: {fmt_msg(m)}")
                continue
            self.p(f"{fmt_msg(m)}")
            self.nodes[m.to].raw.step(m)
        self.queue = keep
        return sent

    def stabilize(self, ids: list[int]) -> None:
        for _ in range(100):
            progressed = False
            for node_id in ids:
                progressed |= self.process_ready(node_id)
            progressed |= self.deliver(ids, False) > 0
            if not progressed:
                return
        raise AssertionError("stabilize did not converge")

    def raft_state(self) -> None:
        for node_id, n in sorted(self.nodes.items()):
            r = n.raw.raft
            kind = " (learner)" if node_id in r.tracker.learners else ""
            self.p(f"{node_id}: {r.role.name} term={r.term} lead={r.lead} commit={r.log.committed}{kind}")

    def run(self, line: str) -> None:
        words = line.split()
        cmd, rest = words[0], words[1:]
        args = [w for w in rest if "=" not in w]
        kw = dict(w.split("=", 1) for w in rest if "=" in w)
        ids = [int(a) for a in args if a.isdigit()] or sorted(self.nodes)
        try:
            self._dispatch(cmd, args, kw, ids)
        except ProposalDropped as e:
            self.p(f"error: {e}")

    def _dispatch(self, cmd: str, args: list[str], kw: dict[str, str], ids: list[int]) -> None:
        raw = self.nodes[int(args[0])].raw if args and args[0].isdigit() and int(args[0]) in self.nodes else None
        if cmd == "add-nodes":
            self.add_nodes(args, kw)
        elif cmd == "campaign" and raw:
            raw.campaign()
        elif cmd == "tick" and raw:
            for _ in range(int(args[1]) if len(args) > 1 else 1):
                raw.tick()
        elif cmd == "tick-election" and raw:
            r = raw.raft
            for _ in range(r.randomized_election_timeout if r.lead != r.id else r.election_timeout):
                raw.tick()
        elif cmd == "tick-heartbeat" and raw:
            for _ in range(raw.raft.heartbeat_timeout):
                raw.tick()
        elif cmd == "propose" and raw:
            raw.propose(args[1].encode())
        elif cmd == "propose-conf-change" and raw:
            kinds = {"add-voter": ConfChangeType.ADD_VOTER, "add-learner": ConfChangeType.ADD_LEARNER}
            raw.propose_conf_change(ConfChange(kinds.get(args[1], ConfChangeType.REMOVE_NODE), int(args[2])))
        elif cmd == "read-index" and raw:
            raw.read_index(args[1].encode())
        elif cmd == "transfer-leader" and raw:
            raw.transfer_leader(int(args[1]))
        elif cmd == "report-snapshot" and raw:
            raw.report_snapshot(int(args[1]), args[2] == "ok")
        elif cmd == "report-unreachable" and raw:
            raw.report_unreachable(int(args[1]))
        elif cmd == "process-ready":
            for node_id in ids:
                self.process_ready(node_id)
        elif cmd == "deliver-msgs":
            self.deliver(ids, "drop" in args)
        elif cmd == "stabilize":
            self.stabilize(ids)
        elif cmd == "isolate":
            self.isolated.add(ids[0])
        elif cmd == "recover":
            self.isolated.clear()
        elif cmd == "compact" and raw:
            n = self.nodes[int(args[0])]
            index = int(args[1])
            n.storage.create_snapshot(index, raw.raft.conf_state(), b"")
            n.storage.compact(index)
            self.p(f"node {n.id}: snapshot and compact at {index}, first index now {n.storage.first_index()}")
        elif cmd == "restart":
            self.restart(ids[0])
        elif cmd == "raft-state":
            self.raft_state()
        elif cmd == "raft-log" and raw:
            r = raw.raft
            ents = r.log.slice(r.log.first_index(), r.log.last_index() + 1)
            self.out.extend(fmt_entry(e) for e in ents)
            if not ents:
                self.p(f"log is empty: first index={r.log.first_index()} last index={r.log.last_index()}")
        elif cmd == "status" and raw:
            st = raw.status()
            self.p(f"{st.id}: {st.role.name} term={st.term} commit={st.commit} applied={st.applied} lead={st.lead}")
            for peer, pr in st.progress.items():
                kind = " learner" if pr.is_learner else ""
                self.p(f"  {peer}: {pr.state.name} match={pr.match} next={pr.next} inflight={pr.inflight}{kind}")
            if st.lead_transferee != NONE:
                self.p(f"  transferring to {st.lead_transferee}")
        else:
            raise ValueError(f"unknown command or node: {cmd} {args}")


def run_scenario(text: str) -> str:
    """Run a scenario file's commands; return the file with every command's output regenerated."""
    env = Env()
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            out.append(line)
            i += 1
            continue
        out.append(line)
        i += 1
        if i < len(lines) and lines[i] == "----":
            i += 1
            while i < len(lines) and lines[i].strip():
                i += 1  # skip the old output
        env.out = []
        env.run(line)
        out.append("----")
        out.extend(env.out or ["ok"])
    return "\n".join(out) + "\n"


def rewrite_requested() -> bool:
    return os.environ.get("COORD_REWRITE_SCENARIOS") == "1"


def main(argv: list[str]) -> int:
    rewrite = "--rewrite" in argv
    names = [a for a in argv if not a.startswith("--")]
    paths = [TESTDATA / n for n in names] if names else sorted(TESTDATA.glob("*.txt"))
    status = 0
    for path in paths:
        text = path.read_text()
        result = run_scenario(text)
        if result != text:
            if rewrite:
                path.write_text(result)
                print(f"rewrote {path.name}")
            else:
                print(f"differs: {path.name}")
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
