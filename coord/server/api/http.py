"""The member's HTTP endpoints on --listen-client-http-urls: etcd's JSON gateway and GET /health, /version, /metrics.

* ``POST /v3/...`` and ``/v3beta/...``: the JSON gateway (coord.server.gateway), calling the member's servicers
  in-process behind the same interceptors as the gRPC server;
* ``GET /health``, ``GET /version``: etcd's JSON bodies; ``GET /metrics``: Prometheus text (coord.server.metrics);
* every answer carries etcd's permissive CORS headers, ``OPTIONS`` on any path answers 200 with no body, and a path
  nothing serves answers 404 ``404 page not found`` (Go's text).

The app should run with ``handler_cancellation=True`` (``web.AppRunner(app, handler_cancellation=True)``), so that a
client closing a streaming call (a watch) cancels it at once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from coord import __version__
from coord.server.api.maintenance import ETCD_API_VERSION
from coord.server.gateway import Gateway, ServiceTable
from coord.server.gateway.calls import Interceptor
from coord.server.gateway.handlers import plain_text
from coord.server.lease import Lessor
from coord.server.metrics import Metrics, register_member_metrics
from coord.server.node import Node

_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
    "Access-Control-Allow-Headers": "accept, content-type, authorization",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS":
        return web.Response(status=200, headers=_CORS_HEADERS)
    return await handler(request)


async def _add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(_CORS_HEADERS)


def _json(body: dict[str, str], status: int = 200) -> web.Response:
    """A JSON answer written as etcd (Go's encoding/json) writes it: no spaces."""
    return web.json_response(body, status=status, dumps=_compact)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def make_app(
    node: Node,
    *,
    servicers: Sequence[object] = (),
    interceptors: Sequence[Interceptor] = (),
    metrics: Metrics | None = None,
    lessor: Lessor | None = None,
    max_message_bytes: int = 4 * 1024 * 1024,
) -> web.Application:
    """The member's HTTP application.

    ``servicers`` are the member's gRPC servicer objects and ``interceptors`` the gRPC server's interceptors (the
    gateway calls through them); ``max_message_bytes`` is the gRPC server's receive limit, applied to gateway
    requests too. ``metrics`` is served at /metrics; with ``lessor`` the member's state metrics are registered on it
    (coord.server.metrics.register_member_metrics). Without ``metrics``, /metrics answers 404.
    """

    async def health(request: web.Request) -> web.Response:
        # As etcd: unhealthy (503) without a known leader, or when the store does not answer a read.
        if not node.leader_id:
            return _json({"health": "false", "reason": "RAFT NO LEADER"}, status=503)
        try:
            with node.read() as view:
                _ = view.current_revision
        except Exception as exc:  # any storage failure makes the member unhealthy
            return _json({"health": "false", "reason": f"storage: {exc}"}, status=503)
        return _json({"health": "true"})

    async def version(request: web.Request) -> web.Response:
        return _json({"etcdserver": ETCD_API_VERSION, "etcdcluster": "3.4.0", "coord": __version__})

    async def serve_metrics(request: web.Request) -> web.Response:
        assert metrics is not None
        body, content_type = metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def get_only(request: web.Request) -> web.Response:
        response = plain_text(405, "Method Not Allowed")
        response.headers["Allow"] = "GET"
        return response

    async def not_found(request: web.Request) -> web.Response:
        return plain_text(404, "404 page not found")

    app = web.Application(middlewares=[_cors])
    app.on_response_prepare.append(_add_cors_headers)
    for path, get in (("/health", health), ("/version", version)):
        resource = app.router.add_resource(path)
        resource.add_route("GET", get)
        resource.add_route("*", get_only)
    if metrics is not None:
        if lessor is not None:
            register_member_metrics(metrics, node, lessor, ETCD_API_VERSION)
        app.router.add_route("*", "/metrics", serve_metrics)
    Gateway(ServiceTable(servicers, interceptors), max_message_bytes=max_message_bytes).add_routes(app)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
