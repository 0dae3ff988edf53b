"""A multi-member real etcd cluster on free loopback ports, for failover tests. Every process is stopped by PID."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType

from coord.testing import ServerProcess, etcd_binary, free_port, wait_for_port


class EtcdCluster:
    """``size`` etcd members named m0..m{size-1}; ``members[i].endpoint`` is the client address of member i."""

    def __init__(self, base_dir: Path, size: int = 3) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed")
        ports = [(free_port(), free_port()) for _ in range(size)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports))
        self.members: list[ServerProcess] = []
        try:
            for i, (client, peer) in enumerate(ports):
                data_dir = base_dir / f"m{i}"
                data_dir.parent.mkdir(parents=True, exist_ok=True)
                log_path = base_dir / f"m{i}.log"
                argv = [
                    binary, "--name", f"m{i}", "--data-dir", str(data_dir),
                    "--listen-client-urls", f"http://127.0.0.1:{client}",
                    "--advertise-client-urls", f"http://127.0.0.1:{client}",
                    "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", f"coord-test-{ports[0][0]}",
                    "--heartbeat-interval", "50", "--election-timeout", "500",
                    "--log-level", "warn", "--logger", "zap",
                ]  # fmt: skip
                with open(log_path, "ab") as log:
                    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                self.members.append(ServerProcess(f"etcd m{i}", proc, client, peer, data_dir, log_path))
            for member in self.members:
                wait_for_port(member.client_port, 30.0, member.proc)
        except BaseException:
            self.stop()
            raise

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def member_by_endpoint(self, endpoint: str) -> ServerProcess:
        return next(m for m in self.members if m.endpoint == endpoint)

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Wait until a quorum elected a leader (etcdctl endpoint health on every member)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = subprocess.run(
                ["etcdctl", "--endpoints", ",".join(self.endpoints), "endpoint", "health"],
                capture_output=True,
                timeout=10,
                env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
            )
            if result.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError("etcd cluster did not become healthy")

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
