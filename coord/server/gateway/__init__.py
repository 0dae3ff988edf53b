"""etcd's HTTP/JSON gateway (grpc-gateway) for coord-server: ``POST /v3/...`` calls the member's gRPC servicers
in-process and answers in etcd 3.4's JSON (see handlers.py for the HTTP rules, jsonpb.py for the JSON mapping,
routes.py for the URL table and calls.py for how servicers are invoked)."""

from coord.server.gateway.calls import GatewayContext, ServiceTable
from coord.server.gateway.handlers import Gateway

__all__ = ["Gateway", "GatewayContext", "ServiceTable"]
