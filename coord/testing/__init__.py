"""Test support shared by coord's tests and its users: real server processes on free loopback ports, and throwaway
TLS certificates for them."""

from coord.testing.certs import CertificateAuthority, TLSFiles
from coord.testing.faults import FaultProxy
from coord.testing.procs import (
    Cluster,
    ServerProcess,
    etcd_binary,
    free_port,
    start_coord_server,
    start_etcd,
    wait_for_port,
)

__all__ = [
    "CertificateAuthority",
    "Cluster",
    "FaultProxy",
    "ServerProcess",
    "TLSFiles",
    "etcd_binary",
    "free_port",
    "start_coord_server",
    "start_etcd",
    "wait_for_port",
]
