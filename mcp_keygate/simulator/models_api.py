"""The simulator's model-list endpoints, in each API's shape, so `mcp-keygate models` and
`check --online` are tested offline over real HTTP.

  GET /v1/models          OpenAI `{"object":"list","data":[{"id",…}]}` (Bearer or `api-key`), or
                          Anthropic `{"data":[{"type":"model","id",…}],"has_more","first_id","last_id"}`
                          when the request carries `x-api-key` or `anthropic-version`
  GET /v1beta/models      Gemini `{"models":[{"name":"models/…",…}]}` (`x-goog-api-key` or `?key=`)

The models listed are a few of each API's plus every `[models."…"]` of the scenario. A key whose
behaviour is `invalid` gets the API's 401 (Gemini: 400 API_KEY_INVALID).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .state import SimState

OPENAI_MODELS = ("gpt-4.1-mini", "gpt-4.1", "gpt-4o-mini")
ANTHROPIC_MODELS = ("claude-sonnet-5", "claude-haiku-4-5")
GEMINI_MODELS = ("gemini-2.5-flash", "gemini-2.5-pro")


def _listed(state: SimState, defaults: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys([*defaults, *state.scenario.context_windows]))


def _rejected(state: SimState, key: str) -> bool:
    return not key or state.scenario.behavior_for(key).behavior == "invalid"


async def list_models(request: Request) -> Response:
    state: SimState = request.app.state.sim
    anthropic = "x-api-key" in request.headers or "anthropic-version" in request.headers
    if anthropic:
        key = request.headers.get("x-api-key", "")
        if _rejected(state, key):
            body = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
            return JSONResponse(body, status_code=401)
        ids = _listed(state, ANTHROPIC_MODELS)
        listing = [{"type": "model", "id": i, "display_name": i, "created_at": "2026-01-01T00:00:00Z"} for i in ids]
        return JSONResponse({"data": listing, "has_more": False, "first_id": ids[0], "last_id": ids[-1]})
    auth = request.headers.get("authorization", "")
    key = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("api-key", "")
    if _rejected(state, key):
        error = {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None}
        return JSONResponse({"error": {**error, "code": "invalid_api_key"}}, status_code=401)
    data: list[dict[str, object]] = [
        {"id": i, "object": "model", "created": 1_700_000_000, "owned_by": "sim"} for i in _listed(state, OPENAI_MODELS)
    ]
    return JSONResponse({"object": "list", "data": data})


async def list_gemini_models(request: Request) -> Response:
    state: SimState = request.app.state.sim
    key = request.headers.get("x-goog-api-key") or request.query_params.get("key", "")
    if _rejected(state, key):
        info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        error = {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
        }
        return JSONResponse({"error": {**error, "details": [info]}}, status_code=400)
    models = [
        {"name": f"models/{i}", "displayName": i, "supportedGenerationMethods": ["generateContent", "countTokens"]}
        for i in _listed(state, GEMINI_MODELS)
    ]
    return JSONResponse({"models": models})
