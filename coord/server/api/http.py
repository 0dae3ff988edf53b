"""HTTP endpoints on --listen-client-http-urls: GET /health and GET /version, with etcd's JSON bodies."""

from __future__ import annotations

from aiohttp import web

from coord import __version__
from coord.server.api.maintenance import ETCD_API_VERSION
from coord.server.node import Node


def make_app(node: Node) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        # A single member is its own leader; it is healthy when its store answers a read.
        try:
            with node.read() as view:
                _ = view.current_revision
        except Exception as exc:  # any storage failure makes the member unhealthy
            return web.json_response({"health": "false", "reason": f"storage: {exc}"}, status=503)
        return web.json_response({"health": "true"})

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"etcdserver": ETCD_API_VERSION, "etcdcluster": "3.4.0", "coord": __version__})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    return app
