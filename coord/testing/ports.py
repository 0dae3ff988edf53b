"""Free TCP ports on 127.0.0.1 for test servers."""

from __future__ import annotations

import socket

_used_ports: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out before."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port found")
