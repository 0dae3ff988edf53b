"""Synchronous helpers for cluster fault tests: status, leader discovery, HashKV, and a bounded write load."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.testing import Cluster, ServerProcess


@contextmanager
def channel(endpoint: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(endpoint) as ch:
        yield ch


def status(endpoint: str, timeout: float = 2.0) -> rpc_pb2.StatusResponse:
    with channel(endpoint) as ch:
        return rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=timeout)


def hash_kv(endpoint: str) -> int:
    with channel(endpoint) as ch:
        return int(rpc_pb2_grpc.MaintenanceStub(ch).HashKV(rpc_pb2.HashKVRequest(), timeout=10).hash)


def put(endpoint: str, key: bytes, value: bytes, timeout: float = 10.0) -> rpc_pb2.PutResponse:
    with channel(endpoint) as ch:
        return rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=value), timeout=timeout)


def get(endpoint: str, key: bytes, *, prefix: bool = False, serializable: bool = False) -> rpc_pb2.RangeResponse:
    end = (key[:-1] + bytes([key[-1] + 1])) if prefix else b""
    with channel(endpoint) as ch:
        req = rpc_pb2.RangeRequest(key=key, range_end=end, serializable=serializable)
        return rpc_pb2_grpc.KVStub(ch).Range(req, timeout=10)


def leader(cluster: Cluster, timeout: float, exclude: ServerProcess | None = None) -> ServerProcess:
    """The member all live members (but ``exclude``) agree leads; waits up to ``timeout`` seconds."""
    try:
        return cluster.wait_leader(timeout, exclude=exclude)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def wait_converged(cluster: Cluster, timeout: float) -> int:
    """Wait until every live member reports the same HashKV at the same revision; returns that revision."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            pairs = []
            for m in cluster.members:
                if not m.alive():
                    continue
                with channel(m.endpoint) as ch:
                    resp = rpc_pb2_grpc.MaintenanceStub(ch).HashKV(rpc_pb2.HashKVRequest(), timeout=10)
                pairs.append((resp.header.revision, resp.hash))
            last = pairs
            if len(set(pairs)) == 1:
                return pairs[0][0]
        except grpc.RpcError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"members did not converge within {timeout}s: {last}")
        time.sleep(0.2)


@dataclass
class WriteLoad:
    """Threads that put unique keys round-robin over ``endpoints`` until stopped (bounded by ``max_writes``);
    ``acked`` holds every key a server acknowledged."""

    endpoints: list[str]
    threads: int = 4
    max_writes: int = 5000
    acked: set[bytes] = field(default_factory=set)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> WriteLoad:
        for t in range(self.threads):
            worker = threading.Thread(target=self._run, args=(t,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _run(self, worker: int) -> None:
        channels = [grpc.insecure_channel(ep) for ep in self.endpoints]
        try:
            stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
            for i in range(self.max_writes // self.threads):
                if self._stop.is_set():
                    return
                key = b"load/%d/%06d" % (worker, i)
                stub = stubs[i % len(stubs)]
                try:
                    stub.Put(rpc_pb2.PutRequest(key=key, value=b"v"), timeout=5)
                except grpc.RpcError:
                    with self._lock:
                        self.failures += 1
                    time.sleep(0.05)
                    continue
                with self._lock:
                    self.acked.add(key)
        finally:
            for ch in channels:
                ch.close()

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)
