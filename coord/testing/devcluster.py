"""Run a local 3-member coord-server cluster for development, until Ctrl-C.

    python -m coord.testing.devcluster [--data-dir devcluster] [--members 3]

Members ``m0``, ``m1``, ``m2`` listen on the ports etcd's own Procfile uses: clients on 127.0.0.1:2379, :22379 and
:32379; peers on :2380, :22380 and :32380; HTTP (/health, /version, the gateway) on :2381, :22381 and :32381. Their
data stays in ``--data-dir``, so running the command again restarts the same cluster. Ctrl-C stops every member by
PID.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from coord.testing.procs import ServerProcess, wait_for_port

_PREFIXES = ["", "2", "3", "4", "5"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("devcluster"))
    parser.add_argument("--members", type=int, default=3, choices=[1, 3, 5])
    args = parser.parse_args(argv)
    ports = [(int(f"{p}2379"), int(f"{p}2380"), int(f"{p}2381")) for p in _PREFIXES[: args.members]]
    initial = ",".join(f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer, _) in enumerate(ports))
    members: list[ServerProcess] = []
    try:
        for i, (client, peer, http) in enumerate(ports):
            data_dir = args.data_dir / f"m{i}"
            data_dir.mkdir(parents=True, exist_ok=True)
            argv_ = [
                sys.executable, "-m", "coord.server.main", "--name", f"m{i}", "--data-dir", str(data_dir),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--listen-client-http-urls", f"http://127.0.0.1:{http}",
                "--initial-cluster", initial, "--initial-cluster-token", "coord-devcluster",
            ]  # fmt: skip
            log_path = args.data_dir / f"m{i}.log"
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(argv_, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            members.append(ServerProcess(f"m{i}", proc, client, peer, data_dir, log_path, argv=argv_))
        for member in members:
            wait_for_port(member.client_port, 30.0, member.proc)
        endpoints = ",".join(m.endpoint for m in members)
        print(f"coord dev cluster up: {endpoints} (logs in {args.data_dir}/m*.log); Ctrl-C stops it", flush=True)
        print(f"try: ETCDCTL_API=3 etcdctl --endpoints {endpoints} endpoint status -w table", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(m.alive() for m in members):
            time.sleep(0.5)
        dead = [m.name for m in members if not m.alive()]
        print(f"member(s) {', '.join(dead)} exited; stopping the cluster", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for member in members:
            member.stop()


if __name__ == "__main__":
    sys.exit(main())
