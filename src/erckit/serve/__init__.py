"""`erckit serve`: label conversations over HTTP (JSON API + a web page), one loaded model, requests batched.

Built on FastAPI (typed request models that refuse unknown fields and wrong types, an OpenAPI schema at
/openapi.json) served by uvicorn; see app.py for the routes.
"""

from __future__ import annotations

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
    with listening:
        predictor = load(folder, best_so_far=best_so_far, trust_remote_code=trust_remote_code)
        app = create_app(predictor, settings)
        host, port = listening.getsockname()[:2]
        print(f"erckit serve: {predictor.kind} model {folder} at http://{_url_host(host)}:{port}/ (Ctrl-C stops)",
              flush=True)
        try:
            uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listening])
        except KeyboardInterrupt:  # uvicorn stops gracefully on Ctrl-C, then raises it again
            raise Interrupted("the server stopped; it keeps nothing") from None


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (0: a free port, named by the caller); refused in one line when it cannot be."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as err:  # a port in use, an address that is not this machine's or does not resolve
        reason = os.strerror(err.errno) if isinstance(err.errno, int) and err.errno > 0 else err.strerror or err
        raise ConfigError(f"--host {host} --port {port}: cannot listen there: {reason}") from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
