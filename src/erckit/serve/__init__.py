"""`erckit serve`: label conversations over HTTP (JSON API + a web page), one loaded model, requests batched.

Built on FastAPI (typed request models that refuse unknown fields and wrong types, an OpenAPI schema at
/openapi.json) served by uvicorn; see app.py for the routes.
"""

from __future__ import annotations

from pathlib import Path

from erckit.serve.protocol import Limits


def serve(folder: str | Path, *, host: str = "127.0.0.1", port: int = 8000, max_turns: int = 200,
          max_chars: int = 2000, max_batch_utterances: int = 256, best_so_far: bool = False,
          trust_remote_code: bool = False) -> None:
    """Load the model folder once and serve it until interrupted (its own code only with `trust_remote_code`)."""
    import uvicorn

    from erckit.models import load
    from erckit.serve.app import create_app

    predictor = load(folder, best_so_far=best_so_far, trust_remote_code=trust_remote_code)
    app = create_app(predictor, Limits(max_turns=max_turns, max_chars=max_chars),
                     max_batch_utterances=max_batch_utterances)
    print(f"erckit serve: {predictor.kind} model {folder} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
