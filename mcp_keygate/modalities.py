"""What a model takes besides text: images, PDFs. Declared per model (`[models.NAME] modalities`),
else known from well-known model names; a model nobody knows takes text only, so an image is never
sent where it would be refused or silently dropped."""

from __future__ import annotations

import re

from .config import Config
from .messages import Message
from .outcomes import Outcome
from .route_report import AttemptRecord

# Upstream model names (any provider) that take images and PDFs as input.
_VISION = re.compile(
    r"(^|/)(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1(?!-mini)|o3|o4|chatgpt-4o|claude-(3|opus|sonnet|haiku)|gemini-"
    r"|grok-(4|2-vision)|pixtral|llava|llama-4|mistral-(medium|small)-(2|3))",
    re.I,
)


def modalities(config: Config, name: str) -> set[str]:
    model = config.models[name]
    if model.modalities is not None:
        return {"text", *model.modalities}
    return {"text", "image", "pdf"} if _VISION.search(config.upstream_model(name)) else {"text"}


def needed(messages: list[Message]) -> set[str]:
    """The kinds of input these messages carry besides text (text files are text)."""
    return {a.kind for m in messages for a in m.attachments if a.kind != "text"}


def able_models(config: Config, chain: list[str], messages: list[Message]) -> tuple[list[str], list[AttemptRecord]]:
    """The models of the chain that take what the messages carry, and an attempt record for each
    one skipped (nothing is sent to it)."""
    needs = needed(messages)
    if not needs:
        return chain, []
    able, skipped = [], []
    for name in chain:
        lacking = sorted(needs - modalities(config, name))
        if not lacking:
            able.append(name)
            continue
        why = (
            f"{name} does not take {' or '.join(lacking)} input (set [models.{name}] modalities if it does); "
            "skipped without sending"
        )
        skipped.append(AttemptRecord(name, "", Outcome.UNSUPPORTED_INPUT.value, None, None, why))
    return able, skipped


def unable_message(chain: list[str], skipped: list[AttemptRecord], messages: list[Message]) -> str:
    kinds = sorted(needed(messages))
    return (
        f"No model of [{', '.join(chain)}] takes {' and '.join(kinds)} input, so nothing was sent. Use a route with a "
        "model that does (see modalities in the config reference), or leave the attachments out.\n"
        + "\n".join(f"  - {a.model}: {a.reason}" for a in skipped)
    )
