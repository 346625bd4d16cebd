"""`erckit serve`: label conversations over HTTP (JSON API + a web page), one loaded model, requests batched.

Built on FastAPI (typed request models that refuse unknown fields and wrong types, an OpenAPI schema at
/openapi.json) served by uvicorn; see app.py for the routes.
"""

from __future__ import annotations

from pathlib import Path

from erckit.serve.settings import ServeSettings

__all__ = ["ServeSettings", "serve"]


def serve(folder: str | Path, settings: ServeSettings | None = None, *, best_so_far: bool = False,
          trust_remote_code: bool = False) -> None:
    """Load the model folder once and serve it until interrupted (its own code only with `trust_remote_code`)."""
    import uvicorn

    from erckit.models import load
    from erckit.serve.app import create_app

    settings = settings or ServeSettings()
    predictor = load(folder, best_so_far=best_so_far, trust_remote_code=trust_remote_code)
    app = create_app(predictor, settings)
    print(f"erckit serve: {predictor.kind} model {folder} at http://{settings.host}:{settings.port}/ (Ctrl-C stops)",
          flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
