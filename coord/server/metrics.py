"""Prometheus metrics of one member, served at ``GET /metrics`` on the HTTP port.

Usage::

    metrics = Metrics()
    server = grpc.aio.server(interceptors=[metrics.interceptor()])
    metrics.gauge_callback(LEASES, "The number of live leases.", lambda: len(lessor.ids()))
    body, content_type = metrics.render()

Each :class:`Metrics` has its own registry (never prometheus-client's global one), so several members in one process
keep separate numbers. Two kinds of metrics:

* gRPC request metrics, recorded by the server interceptor from :meth:`Metrics.interceptor` with the names and labels
  of go-grpc-prometheus that etcd exports: ``grpc_server_started_total`` and ``grpc_server_handled_total``
  (counters; labels grpc_type, grpc_service, grpc_method and, for handled, grpc_code such as ``OK`` or
  ``InvalidArgument``) and ``grpc_server_handling_seconds`` (histogram). The JSON gateway runs the same interceptors,
  so its calls are counted as the gRPC calls they become, as in etcd.
* member state read at scrape time from callbacks registered with :meth:`Metrics.gauge_callback` and
  :meth:`Metrics.counter_callback` (names below; etcd's names where etcd has the metric).
  :func:`register_member_metrics` registers those that today's member can answer.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from coord.server.handler_wrapping import WrappedHandlers
from coord.server.lease import Lessor
from coord.server.node import Node

log = logging.getLogger(__name__)

# -- names of the member-state metrics (etcd's where etcd has one) ---------------------------------------------------
HAS_LEADER = "etcd_server_has_leader"  # gauge, 1 when the member knows a leader
IS_LEADER = "etcd_server_is_leader"  # gauge, 1 when the member is the leader
LEADER_CHANGES = "etcd_server_leader_changes_seen_total"  # counter
PROPOSALS_PENDING = "etcd_server_proposals_pending"  # gauge
PROPOSALS_FAILED = "etcd_server_proposals_failed_total"  # counter
PROPOSALS_COMMITTED = "etcd_server_proposals_committed_total"  # gauge: the Raft commit index
PROPOSALS_APPLIED = "etcd_server_proposals_applied_total"  # gauge: the applied index
RAFT_TERM = "coord_server_raft_term"  # gauge (etcd has no such metric)
DB_TOTAL_SIZE = "etcd_mvcc_db_total_size_in_bytes"  # gauge
DB_TOTAL_SIZE_DEBUGGING = "etcd_debugging_mvcc_db_total_size_in_bytes"  # gauge, etcd 3.4's older name
DB_SIZE_IN_USE = "etcd_mvcc_db_total_size_in_use_in_bytes"  # gauge
CURRENT_REVISION = "etcd_debugging_mvcc_current_revision"  # gauge
COMPACT_REVISION = "etcd_debugging_mvcc_compact_revision"  # gauge
WATCHERS = "etcd_debugging_mvcc_watcher_total"  # gauge
WATCH_STREAMS = "etcd_debugging_mvcc_watch_stream_total"  # gauge, open Watch calls (from the interceptor)
LEASES = "coord_server_leases"  # gauge, live leases (etcd has only grant/revoke counters)
SERVER_ID = "etcd_server_id"  # gauge, 1 with label server_id
SERVER_VERSION = "etcd_server_version"  # gauge, 1 with label server_version

_WATCH_METHOD = "/etcdserverpb.Watch/Watch"

# Go's names of the status codes, as go-grpc-prometheus labels them.
_CODE_NAMES = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


@dataclass(frozen=True)
class _Callback:
    kind: str  # "gauge" or "counter"
    documentation: str
    fn: Callable[[], float]
    labels: tuple[tuple[str, str], ...]


class _CallbackCollector(Collector):
    """Reads the registered callbacks at scrape time; a callback that raises is logged and left out."""

    def __init__(self) -> None:
        self.callbacks: dict[str, _Callback] = {}

    def collect(self) -> Iterable[Metric]:
        for name, callback in sorted(self.callbacks.items()):
            try:
                value = float(callback.fn())
            except Exception:
                log.exception("metrics callback for %s failed", name)
                continue
            label_names = [k for k, _ in callback.labels]
            family: Metric
            if callback.kind == "counter":
                family = CounterMetricFamily(name, callback.documentation, labels=label_names)
            else:
                family = GaugeMetricFamily(name, callback.documentation, labels=label_names)
            family.add_metric([v for _, v in callback.labels], value)
            yield family


class Metrics:
    """The metrics of one member: its own registry, the gRPC interceptor, and member-state callbacks."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self._started = Counter(
            "grpc_server_started_total", "Total number of RPCs started on the server.", labels, registry=self.registry
        )
        self._handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            [*labels, "grpc_code"],
            registry=self.registry,
        )
        self._handling = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            labels,
            registry=self.registry,
        )
        self._in_flight: dict[str, int] = {}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._callbacks = _CallbackCollector()
        self.registry.register(self._callbacks)
        self.gauge_callback(WATCH_STREAMS, "Total number of watch streams.", lambda: self.in_flight(_WATCH_METHOD))

    # -- member state ----------------------------------------------------------------------------------------------

    def gauge_callback(
        self, name: str, documentation: str, fn: Callable[[], float], labels: Mapping[str, str] | None = None
    ) -> None:
        """Export ``fn()`` as gauge ``name`` at every scrape. Registering a name again replaces its callback.

        ``fn`` runs on the event loop while /metrics is answered: it must be quick and must not block.
        """
        self._callbacks.callbacks[name] = _Callback("gauge", documentation, fn, tuple((labels or {}).items()))

    def counter_callback(
        self, name: str, documentation: str, fn: Callable[[], float], labels: Mapping[str, str] | None = None
    ) -> None:
        """Export ``fn()`` (a running total that never decreases) as counter ``name``; ``name`` ends in ``_total``.

        Registering a name again replaces its callback. Raises ValueError for a name without ``_total``.
        """
        if not name.endswith("_total"):
            raise ValueError(f"a counter's name ends in _total: {name!r}")
        self._callbacks.callbacks[name] = _Callback("counter", documentation, fn, tuple((labels or {}).items()))

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def in_flight(self, method: str) -> int:
        """Calls of ``method`` (e.g. ``/etcdserverpb.Watch/Watch``) started and not finished yet."""
        return self._in_flight.get(method, 0)

    # -- gRPC ------------------------------------------------------------------------------------------------------

    def interceptor(self) -> grpc.aio.ServerInterceptor:  # type: ignore[type-arg]
        """A grpc.aio server interceptor that counts and times every call of the server it is installed on."""
        return _GrpcMetricsInterceptor(self)

    def _begin(self, method: str, labels: tuple[str, str, str]) -> float:
        self._child(self._started, labels).inc()
        self._in_flight[method] = self._in_flight.get(method, 0) + 1
        return time.perf_counter()

    def _end(self, method: str, labels: tuple[str, str, str], started: float, code: grpc.StatusCode) -> None:
        self._in_flight[method] -= 1
        self._child(self._handled, (*labels, _CODE_NAMES.get(code, "Unknown"))).inc()
        self._child(self._handling, labels).observe(time.perf_counter() - started)

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        """``metric.labels(*labels)``, looked up once per label set (prometheus-client's lookup locks and hashes)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


def _final_code(context: Any, error: BaseException | None) -> grpc.StatusCode:
    """The status a call ends with, as grpc.aio decides it: CANCELLED when cancelled, else the code set on (or
    aborted with) the context, else UNKNOWN after an exception and OK otherwise."""
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    code = None
    read_code = getattr(context, "code", None)
    if callable(read_code):
        try:
            code = read_code()
        except Exception:  # a context that cannot tell: fall back to the exception
            code = None
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK


class _CodeRecorder:
    """Wraps the context grpc.aio gives a synchronous handler (which cannot report its code) to remember it."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._code: grpc.StatusCode | None = None

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code
        self._context.set_code(code)

    def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> Any:
        self._code = code
        return self._context.abort(code, details, trailing_metadata)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _GrpcMetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        # The chain answers the same handler object for a method call after call, so the wrapping is built once, not
        # on every call (the hot path).
        self._wrapped = WrappedHandlers(self._instrument)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(handler_call_details)
        if handler is None:
            return handler  # type: ignore[return-value]  # unknown method: grpc answers UNIMPLEMENTED itself
        return self._wrapped.get(handler_call_details.method, handler)  # type: ignore[no-any-return]

    def _instrument(self, handler: Any, method: str) -> Any:
        _, service, name = method.split("/", 2)
        if handler.request_streaming and handler.response_streaming:
            kind, factory, behavior = "bidi_stream", grpc.stream_stream_rpc_method_handler, handler.stream_stream
        elif handler.request_streaming:
            kind, factory, behavior = "client_stream", grpc.stream_unary_rpc_method_handler, handler.stream_unary
        elif handler.response_streaming:
            kind, factory, behavior = "server_stream", grpc.unary_stream_rpc_method_handler, handler.unary_stream
        else:
            kind, factory, behavior = "unary", grpc.unary_unary_rpc_method_handler, handler.unary_unary
        return factory(
            self._wrap(behavior, method, (kind, service, name)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, behavior: Any, method: str, labels: tuple[str, str, str]) -> Any:
        metrics = self._metrics
        if inspect.isasyncgenfunction(behavior):

            async def stream_wrapper(request: Any, context: Any) -> Any:
                started = metrics._begin(method, labels)
                error: BaseException | None = None
                try:
                    async for response in behavior(request, context):
                        yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    metrics._end(method, labels, started, _final_code(context, error))

            return stream_wrapper
        if inspect.iscoroutinefunction(behavior):

            async def async_wrapper(request: Any, context: Any) -> Any:
                started = metrics._begin(method, labels)
                error: BaseException | None = None
                try:
                    return await behavior(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    metrics._end(method, labels, started, _final_code(context, error))

            return async_wrapper

        def sync_wrapper(request: Any, context: Any) -> Any:
            started = metrics._begin(method, labels)
            recorder = _CodeRecorder(context)
            error: BaseException | None = None
            try:
                return behavior(request, recorder)
            except BaseException as exc:
                error = exc
                raise
            finally:
                metrics._end(method, labels, started, _final_code(recorder, error))

        return sync_wrapper


def register_member_metrics(metrics: Metrics, node: Node, lessor: Lessor, version: str) -> None:
    """Register the member-state metrics the node, its store and its lessor answer.

    :data:`WATCHERS` is registered by the server, which owns the WatchHub.
    """

    def revisions() -> tuple[int, int]:
        with node.read() as view:
            return view.current_revision, view.compact_revision

    metrics.gauge_callback(
        HAS_LEADER, "Whether or not a leader exists. 1 is existence, 0 is not.", lambda: 1 if node.leader_id else 0
    )
    metrics.gauge_callback(
        IS_LEADER, "Whether or not this member is a leader. 1 if is, 0 otherwise.", lambda: 1 if node.is_leader else 0
    )
    metrics.counter_callback(LEADER_CHANGES, "The number of leader changes seen.", lambda: node.leader_changes)
    metrics.counter_callback(
        PROPOSALS_FAILED, "The total number of failed proposals seen.", lambda: node.proposals_failed
    )
    metrics.gauge_callback(RAFT_TERM, "The Raft term of this member.", lambda: node.term)
    metrics.gauge_callback(
        PROPOSALS_PENDING, "The current number of pending proposals to commit.", lambda: node.pending_proposals
    )
    metrics.gauge_callback(
        PROPOSALS_COMMITTED, "The total number of consensus proposals committed.", lambda: node.raft_status()[1]
    )
    metrics.gauge_callback(
        PROPOSALS_APPLIED, "The total number of consensus proposals applied.", lambda: node.applied_index
    )
    size_help = "Total size of the underlying database physically allocated in bytes."
    metrics.gauge_callback(DB_TOTAL_SIZE, size_help, node.backend.size)
    metrics.gauge_callback(DB_TOTAL_SIZE_DEBUGGING, size_help, node.backend.size)
    metrics.gauge_callback(
        DB_SIZE_IN_USE, "Total size of the underlying database logically in use in bytes.", node.backend.size_in_use
    )
    metrics.gauge_callback(CURRENT_REVISION, "The current revision of store.", lambda: revisions()[0])
    metrics.gauge_callback(
        COMPACT_REVISION, "The revision of the last compaction in store.", lambda: max(0, revisions()[1])
    )
    metrics.gauge_callback(LEASES, "The number of live leases.", lambda: len(lessor.ids()))
    metrics.gauge_callback(
        SERVER_ID,
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        lambda: 1,
        labels={"server_id": f"{node.member_id:x}"},
    )
    metrics.gauge_callback(
        SERVER_VERSION,
        "Which version is running. 1 for 'server_version' label with current version.",
        lambda: 1,
        labels={"server_version": version},
    )
