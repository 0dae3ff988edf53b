"""coord-server: run one member until SIGINT or SIGTERM (``coord-server snapshot ...``: the offline snapshot tools)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from coord.server.config import ServerConfig, from_args
from coord.server.restore import main as snapshot_main
from coord.server.server import MemberServer
from coord.server.tls_ciphers import GRPC_CIPHER_ENV, openssl_cipher_list

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


async def serve(config: ServerConfig) -> int:
    """Run the member; the exit status: 0 when stopped by a signal or removed, 1 when it failed."""
    server = MemberServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    removed = asyncio.create_task(server.stopped.wait())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([removed, stopping], return_when=asyncio.FIRST_COMPLETED)
    removed.cancel()
    stopping.cancel()
    logging.getLogger("coord.server").info("stopping")
    await server.stop()
    return 1 if server.failed else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["snapshot"]:  # coord-server snapshot restore|status
        return snapshot_main(args[1:])
    config = from_args(argv)
    _apply_cipher_suites(config, args)
    logging.basicConfig(
        level=_LEVELS[config.log_level], format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    return asyncio.run(serve(config))


def _apply_cipher_suites(config: ServerConfig, args: list[str]) -> None:
    """Make gRPC apply --cipher-suites: it reads GRPC_SSL_CIPHER_SUITES once, when it loads (already done here, by
    the imports), so set the variable and start this program again in the same process (same PID) with the same
    arguments. Returns when nothing is to be done (no list, or the variable already holds it)."""
    suites = config.client_tls.cipher_suites
    if not suites:
        return
    wanted = openssl_cipher_list(suites)  # from_args validated the names
    if os.environ.get(GRPC_CIPHER_ENV) == wanted:
        return
    os.environ[GRPC_CIPHER_ENV] = wanted
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "coord.server.main", *args])


if __name__ == "__main__":
    sys.exit(main())
