"""The Gemini generateContent API as the simulator speaks it: bodies, google.rpc errors, SSE frames."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .flow import Answer, Cut, Rejected, SimCall, serve, sse
from .media import MediaError, gemini_parts
from .state import Decision, fingerprint
from .structured import camel_schema, gemini_config_problem

FINISH = {"stop": "STOP", "length": "MAX_TOKENS"}
_QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def _error(status: int, state: str, message: str, details: list[dict] | None = None) -> Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": state}
    if details:
        error["details"] = details
    return JSONResponse({"error": error}, status_code=status)


def _invalid(message: str) -> Response:
    return _error(400, "INVALID_ARGUMENT", message)


def _quota_429(model: str, per: str, retry_s: float, limit: int) -> Response:
    quota_id = f"GenerateRequestsPer{per}PerProjectPerModel-FreeTier"
    details: list[dict[str, Any]] = [
        {
            "@type": _QUOTA_FAILURE,
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": str(limit),
                }
            ],
        },
        {"@type": _RETRY_INFO, "retryDelay": f"{round(retry_s)}s"},
    ]
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more information on this "
        f"error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. * Quota exceeded for metric: "
        f"generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: {limit}, model: {model}\n"
        f"Please retry in {retry_s:.1f}s."
    )
    return _error(429, "RESOURCE_EXHAUSTED", message, details)


class GeminiDialect:
    api = "gemini"

    def invalid_json(self) -> Response:
        return _invalid("Invalid JSON payload received.")

    def parse(self, request: Request, body: Any) -> SimCall:
        target = request.path_params["target"]
        model, _, method = target.partition(":")
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key") or ""
        if not key:
            raise Rejected(
                _error(
                    403,
                    "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers (callers "
                    "without established identity). Please use API Key or other form of API consumer "
                    "identity to call this API.",
                )
            )
        log = {"key": fingerprint(key), "model": model}
        if method not in ("generateContent", "streamGenerateContent"):
            raise Rejected(_error(404, "NOT_FOUND", f"Method {method!r} is not found."), **log)
        if not isinstance(body, dict):
            raise Rejected(_invalid("The request body must be a JSON object."), **log)
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise Rejected(_invalid("* GenerateContentRequest.contents: contents is not specified"), **log)
        turns, attachments = _turns(contents, log)
        system_instruction = body.get("systemInstruction") or body.get("system_instruction")
        system = None
        if system_instruction is not None:
            parts = system_instruction.get("parts") if isinstance(system_instruction, dict) else None
            if not isinstance(parts, list):
                raise Rejected(_invalid("systemInstruction.parts must be a list"), **log)
            system = "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
        config = body.get("generationConfig") or body.get("generation_config") or {}
        schema = _schema(config, log)
        max_tokens = config.get("maxOutputTokens")
        return SimCall(
            key=key,
            model=model,
            turns=turns,
            system=system,
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            stream=method == "streamGenerateContent",
            log={
                "messages": contents,
                "system": system_instruction,
                "alt": request.query_params.get("alt"),
                "generation_config": config,
                "attachments": attachments,
            },
            schema=schema,
        )

    def headers(self, decision: Decision) -> dict[str, str]:
        return {}  # Gemini sends no rate-limit headers

    def error(self, decision: Decision, call: SimCall, prompt_tokens: int) -> Response:
        failure = decision.failure
        if failure == "ratelimit":
            return _quota_429(call.model, "Minute", decision.retry_after_s or 30.0, decision.limit_requests)
        if failure in ("quota", "daily"):
            # The per-day 429 still carries a short retryDelay: the quotaId is what tells it apart.
            return _quota_429(call.model, "Day", 26.0, decision.behavior.rpd or 250)
        if failure == "spendlimit":
            return _error(
                402,
                "FAILED_PRECONDITION",
                "Your prepayment credits are depleted. Please go to AI Studio to manage your project and billing.",
            )
        if failure == "invalid":
            details: list[dict[str, Any]] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ]
            return _error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", details)
        if failure == "overloaded":
            return _error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
        if failure == "context":
            return _invalid(
                f"The input token count ({prompt_tokens}) exceeds the maximum number of tokens allowed "
                f"({decision.context_window})."
            )
        return _error(
            500,
            "INTERNAL",
            "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting",
        )

    def _frame(self, answer: Answer, text: str, finish: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        frame: dict[str, Any] = {"candidates": [candidate], "modelVersion": answer.model, "responseId": answer.id}
        if finish:
            candidate["finishReason"] = FINISH[answer.finish]
            frame["usageMetadata"] = {
                "promptTokenCount": answer.prompt_tokens,
                "candidatesTokenCount": answer.completion_tokens,
                "totalTokenCount": answer.prompt_tokens + answer.completion_tokens,
            }
        return frame

    def reply(self, answer: Answer, decision: Decision, call: SimCall | None = None) -> Response:
        return JSONResponse(self._frame(answer, answer.text, finish=True))

    async def stream(self, call: SimCall, answer: Answer, cut: Cut) -> AsyncIterator[bytes]:
        words = answer.words()
        for i, word in enumerate(words):
            if cut and i >= len(words) // 2:
                if cut == "error":
                    error = {
                        "code": 503,
                        "message": "The model is overloaded. Please try again later.",
                        "status": "UNAVAILABLE",
                    }
                    yield sse({"error": error})
                return
            yield sse(self._frame(answer, word, finish=i == len(words) - 1))


def _turns(contents: list[Any], log: dict[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """The contents as {role, content} text (checked as the API checks them), and their files."""
    turns: list[dict[str, str]] = []
    attachments: list[dict[str, Any]] = []
    for i, content in enumerate(contents):
        role = content.get("role", "user") if isinstance(content, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        if role not in ("user", "model"):
            raise Rejected(_invalid(f"Please use a valid role: user, model. (contents[{i}].role)"), **log)
        try:
            found = gemini_parts(parts)
        except MediaError as exc:
            raise Rejected(_invalid(f"* GenerateContentRequest.contents[{i}].parts: {exc}"), **log) from None
        if found is None:
            raise Rejected(
                _invalid(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."), **log
            )
        text = found[0]
        attachments += [{"message": i, **f} for f in found[1]]
        turns.append({"role": "assistant" if role == "model" else "user", "content": text})
    return turns, attachments


def _schema(config: dict[str, Any], log: dict[str, Any]) -> Any:
    """The schema a structured answer must fit (None: a plain answer)."""
    problem = gemini_config_problem(config)
    if problem:
        raise Rejected(_invalid(problem), **log)
    schema = camel_schema(config.get("responseSchema", config.get("response_schema")))
    schema = config.get("responseJsonSchema", config.get("response_json_schema", schema))
    if schema is None and config.get("responseMimeType", config.get("response_mime_type")) == "application/json":
        schema = {"type": "object"}
    return schema


DIALECT = GeminiDialect()


async def generate_content(request: Request) -> Response:
    return await serve(DIALECT, request)
