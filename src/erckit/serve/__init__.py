"""`erckit serve`: label conversations over HTTP (JSON API + a web page), one loaded model, requests batched.

Built on FastAPI (typed request models that refuse unknown fields and wrong types, an OpenAPI schema at
/openapi.json) served by uvicorn; see app.py for the routes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

from erckit.config import ConfigError
from erckit.data import Interrupted
from erckit.serve.settings import ServeSettings

__all__ = ["ServeSettings", "serve"]


def serve(folder: str | Path, settings: ServeSettings | None = None, *, best_so_far: bool = False,
          trust_remote_code: bool = False) -> None:
    """Load the model folder once and serve it until interrupted (its own code only with `trust_remote_code`)."""
    import uvicorn

    from erckit.models import load
    from erckit.serve.app import create_app

    settings = settings or ServeSettings()
    listening = listen(settings.host, settings.port)  # before the model loads: a port in use is told at once
    with contextlib.ExitStack() as stack:
        for sock in listening:
            stack.enter_context(sock)
        predictor = load(folder, best_so_far=best_so_far, trust_remote_code=trust_remote_code)
        app = create_app(predictor, settings)
        urls = ", ".join(_url(sock) for sock in listening)
        print(f"erckit serve: {predictor.kind} model {folder} at {urls} (Ctrl-C stops)", flush=True)
        try:
            uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=listening)
        except KeyboardInterrupt:  # uvicorn stops gracefully on Ctrl-C, then raises it again
            raise Interrupted("the server stopped; it keeps nothing") from None


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to host:port, one per address the host resolves to (`localhost`: 127.0.0.1 and ::1 where
    the machine has both), all on one port (0: a free one, named by the caller); an address family the machine
    lacks is passed over. Refused in one line when none can be bound, or when the port is taken on any."""
    sockets: list[socket.socket] = []
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, address in dict.fromkeys((info[0], info[4]) for info in found):
            address = (address[0], sockets[0].getsockname()[1] if sockets else port, *address[2:])
            try:
                sockets.append(socket.create_server(address, family=family))
            except OSError as err:
                if err.errno != errno.EADDRNOTAVAIL:  # not available: not this machine's, or its family is off
                    raise
        if not sockets:
            raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
        return sockets
    except OSError as err:  # a port in use, an address that is not this machine's or does not resolve
        for sock in sockets:
            sock.close()
        reason = os.strerror(err.errno) if isinstance(err.errno, int) and err.errno > 0 else err.strerror or err
        raise ConfigError(f"--host {host} --port {port}: cannot listen there: {reason}") from None


def _url(sock: socket.socket) -> str:
    """The page's address on a listening socket (an IPv6 host in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
