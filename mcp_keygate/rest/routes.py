"""The REST face on the HTTP transports, for tools that do not speak MCP: OpenAI's
`/v1/chat/completions` and `/v1/models`, and every preset as `POST /v1/presets/{name}` (what API
gateways call prompt encapsulation), with `GET /v1/presets` listing them and their JSON Schemas.

Same bearer tokens (the guards in front of every route), same router, pool, policies, budgets and
usage accounting as the MCP tools; errors in OpenAI's shape with the tools' explanations.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..accounting import accounted
from ..attempts import Notify
from ..auth import LOCAL_OWNER
from ..complete_request import DEFAULT_MAX_WAIT_S, CompleteRequest
from ..errors import KeygateError
from ..gateway import Keygate
from ..http_guards import caller_of
from ..keys.secret import scrub
from ..policies import TokenPolicy
from ..schemas import CompleteResult
from .chat import completion_body, parse_chat, result_headers, sse, stream_chunks
from .errors import ApiError, error_body, from_api_error, from_keygate_error
from .presets import PresetSchemas
from .streaming import ProgressStream, cancel_on_disconnect

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from ..metrics import Metrics

MAX_BODY_ERROR = "the body is not JSON (NaN and Infinity are not JSON numbers): send a JSON object"


class RestApi:
    def __init__(self, gateway: Keygate, server: MCPServer, metrics: Metrics | None) -> None:
        self.gateway = gateway
        self.metrics = metrics
        self.presets = PresetSchemas(server)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/presets", self.list_presets, methods=["GET"]),
            Route("/v1/presets/{name}", self.run_preset, methods=["POST"]),
        ]

    def _owner(self, request: Request) -> str:
        return caller_of(request.scope) or LOCAL_OWNER

    def _policy(self, owner: str) -> TokenPolicy | None:
        return self.gateway.policies.for_token(owner)

    async def chat_completions(self, request: Request) -> Response:
        owner = self._owner(request)
        try:
            call = parse_chat(await _json(request), request.headers)
        except ApiError as exc:
            return from_api_error(exc)

        def answer(notify: Notify | None = None) -> Any:
            complete = self.gateway.calls.complete(call.request, caller=owner, notify=notify)
            return accounted(self.metrics, owner, "chat completion", complete, self.gateway.activity)

        if call.stream:
            try:  # refusals while an error status can still be sent (the SDKs raise by status)
                await self.gateway.calls.precheck(call.request, owner)
            except KeygateError as exc:
                return self._failure(exc)
            return _AsgiResponse(
                ProgressStream(
                    answer,
                    lambda result: stream_chunks(result, call.include_usage),
                    self._failure_event,
                    lambda text: scrub(text, self.gateway.secrets),
                )
            )
        try:
            result = await _unless_gone(request, answer())
            if result is None:
                return Response(status_code=499)  # the client left; the call was cancelled
        except KeygateError as exc:
            return self._failure(exc)
        return JSONResponse(completion_body(result), headers=result_headers(result))

    async def models(self, request: Request) -> Response:
        config, policy = self.gateway.config, self._policy(self._owner(request))
        names = [*config.route_names(), *(m for m in config.models if m not in config.route_names())]
        allowed = [n for n in names if policy is None or policy.may_call(config, n)]
        created = int(time.time())
        data = [{"id": name, "object": "model", "created": created, "owned_by": "mcp-keygate"} for name in allowed]
        return JSONResponse({"object": "list", "data": data})

    async def list_presets(self, request: Request) -> Response:
        config, policy = self.gateway.config, self._policy(self._owner(request))
        listed = []
        for name, preset in config.presets.items():
            if policy is None or policy.may_use_preset(config, name):
                schema = await self.presets.schema(name)
                listed.append(
                    {"name": name, "description": preset.description, "route": preset.route, "parameters": schema}
                )
        return JSONResponse({"object": "list", "data": listed})

    async def run_preset(self, request: Request) -> Response:
        owner, name = self._owner(request), request.path_params["name"]
        config, policy = self.gateway.config, self._policy(owner)
        if policy is not None and name in config.presets and not policy.may_use_preset(config, name):
            try:  # before any argument check: a refusal must not tell a hidden preset's parameters
                policy.check(config, owner, config.presets[name].route, name)
            except KeygateError as exc:
                return self._failure(exc)
        try:
            arguments = await _json(request)
            if not isinstance(arguments, dict):
                raise ApiError(400, "the body must be a JSON object of the preset's parameters")
            problem = await self.presets.problem(name, arguments)
            if problem:
                raise ApiError(404 if problem.startswith("unknown preset") else 400, problem)
        except ApiError as exc:
            return from_api_error(exc)
        base = CompleteRequest(
            conversation_id=arguments.pop("conversation_id", None),
            max_wait_s=arguments.pop("max_wait_s", DEFAULT_MAX_WAIT_S),
        )
        try:
            call = self.gateway.calls.run_preset(name, arguments, base, caller=owner)
            answered = await _unless_gone(request, accounted(self.metrics, owner, name, call, self.gateway.activity))
            if answered is None:
                return Response(status_code=499)
            result: CompleteResult = answered
        except KeygateError as exc:
            return self._failure(exc)
        return JSONResponse(result.model_dump(mode="json"), headers=result_headers(result))

    def _failure(self, exc: KeygateError) -> Response:
        status, body, headers = from_keygate_error(exc, self.gateway.secrets)
        return JSONResponse(body, status, headers=headers)

    def _failure_event(self, exc: KeygateError) -> str:
        _status, body, _headers = from_keygate_error(exc, self.gateway.secrets)
        return sse(body)


async def _unless_gone(request: Request, call: Awaitable[CompleteResult]) -> CompleteResult | None:
    """The call's result, or None when the client disconnected first: the call is then cancelled
    (its leases given back, its upstream socket closed) rather than answered, stored and billed
    for nobody."""
    outcome: list[CompleteResult] = []
    failure: list[KeygateError] = []
    async with anyio.create_task_group() as group:
        group.start_soon(cancel_on_disconnect, request.receive, group.cancel_scope)
        try:
            outcome.append(await call)
        except KeygateError as exc:  # raised below, not wrapped in the task group's exception group
            failure.append(exc)
        group.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return outcome[0] if outcome else None


async def _json(request: Request) -> Any:
    """The body as JSON — strictly: no NaN or Infinity (not JSON, though Python reads them), and
    no string that is not valid Unicode (a lone surrogate cannot be sent on to a provider)."""
    try:
        body = json.loads(await request.body(), parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, MAX_BODY_ERROR) from None
    if (where := _bad_text(body, "")) is not None:
        raise ApiError(400, f"{where or 'the body'}: not valid Unicode text (a lone surrogate)", param=where or None)
    return body


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON number")


def _bad_text(value: Any, where: str) -> str | None:
    """The path of the first string (or key) that cannot be encoded as UTF-8, if any."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = [(f"[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    for name, item in items:
        path = f"{where}{name}" if name.startswith("[") else (f"{where}.{name}" if where else str(name))
        if (found := _bad_text(name, path)) is not None or (found := _bad_text(item, path)) is not None:
            return found
    return None


class _AsgiResponse(Response):
    """A Starlette response that hands the connection to a raw ASGI callable."""

    def __init__(self, app: ProgressStream) -> None:
        super().__init__()
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


__all__ = ["RestApi", "error_body"]
