"""The simulator's Starlette app and its control endpoints.

Provider APIs: OpenAI `POST /v1/chat/completions` (also under `/openai/v1/` and Azure's
`/openai/deployments/{name}/`), Anthropic `POST /v1/messages`, Gemini
`POST /v1beta/models/{model}:generateContent` (and `/v1/…`) and `:streamGenerateContent?alt=sse`.

Model lists (GET): `/v1/models` (OpenAI or Anthropic shape), `/v1beta/models` (Gemini).

Control endpoints (not part of any provider API):
  GET  /_sim/log      the request log: [{api, key (fingerprint), model, messages, status, outcome, …}]
  POST /_sim/reset    clear the log and every rate window; the JSON body (a scenario) replaces the
                      scenario, an empty body restores the magic-prefix defaults
  GET  /healthz       liveness
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .anthropic_api import messages
from .gemini_api import generate_content
from .models_api import list_gemini_models, list_models
from .openai_api import chat_completions, perplexity_chat_completions
from .scenario import Scenario, ScenarioError, parse_scenario
from .state import SimState


async def sim_log(request: Request) -> Response:
    return JSONResponse({"requests": request.app.state.sim.entries()})


async def sim_reset(request: Request) -> Response:
    raw = await request.body()
    scenario = Scenario()
    if raw.strip():
        try:
            scenario = parse_scenario(json.loads(raw))
        except (ValueError, ScenarioError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
    request.app.state.sim.reset(scenario)
    return JSONResponse({"ok": True})


async def healthz(_: Request) -> Response:
    return JSONResponse({"ok": True})


def create_app(scenario: Scenario | None = None) -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/chat/completions", chat_completions, methods=["POST"]),
            Route("/openai/v1/chat/completions", chat_completions, methods=["POST"]),  # Azure v1, Groq
            Route("/perplexity/chat/completions", perplexity_chat_completions, methods=["POST"]),  # strict turns
            Route("/openai/deployments/{deployment}/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),  # OpenAI-compatible and Anthropic
            Route("/models", list_models, methods=["GET"]),  # OpenAI-compatible bases without /v1
            Route("/v1beta/models", list_gemini_models, methods=["GET"]),
            Route("/v1beta/models/{target:path}", generate_content, methods=["POST"]),
            Route("/v1/models/{target:path}", generate_content, methods=["POST"]),
            Route("/_sim/log", sim_log, methods=["GET"]),
            Route("/_sim/reset", sim_reset, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    app.state.sim = SimState(scenario or Scenario())
    return app
