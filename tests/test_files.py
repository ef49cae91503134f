"""Files and images: local paths over stdio confined to the client's MCP roots (or [server]
file_roots), inline content only over HTTP, translated per provider (OpenAI image_url and file parts,
Anthropic image and document blocks, Gemini inline_data), skipped for models that cannot take them,
and kept by content hash so a fallback model later in the conversation receives them too. Through
real MCP clients over stdio and streamable HTTP, against the simulator, whose checks of each API's
parts the official SDKs confirm. Every promise has its attack."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import zlib
from pathlib import Path

import httpx2
import pytest
from mcp import Client, types

from mcp_keygate.attachments import Attachment
from mcp_keygate.complete_request import CompleteRequest
from mcp_keygate.config import parse_config
from mcp_keygate.gateway import Keygate
from mcp_keygate.router import RouteFailed

from .conftest import server_params, sim_log
from .servers import ServerProcess, free_port, streamable

pytestmark = pytest.mark.anyio


def png(width: int = 2, height: int = 2, seed: int = 0) -> bytes:
    """A real, tiny PNG (the APIs only take real images; `seed` makes different ones)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(
        b"\x00" + b"".join(bytes([(seed + x + y) % 256, 10, 20]) for x in range(width)) for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
IMAGE = png()
NOTES = "Herons: long legs, wade in shallow water.\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- the simulator checks each API's file parts as the API does (official SDKs) ---


def test_openai_sdk_sends_image_url_and_file_parts_the_simulator_checks(sim):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(api_key="sim-ok-files000001", base_url=sim.openai_base, max_retries=0)
    content = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(IMAGE)}"}},
        {"type": "file", "file": {"filename": "report.pdf", "file_data": f"data:application/pdf;base64,{b64(PDF)}"}},
    ]
    reply = client.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": content}])
    assert reply.choices[0].message.content.startswith("[gpt-4.1-mini]")
    logged = sim_log(sim)[-1]["attachments"]
    assert [(a["part"], a["sha256"]) for a in logged] == [("image_url", sha(IMAGE)), ("file", sha(PDF))]
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="gpt-4.1-mini",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}]}
            ],
        )
    assert "invalid base64" in str(bad.value)


def test_anthropic_sdk_sends_image_and_document_blocks_the_simulator_checks(sim):
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(api_key="sim-ok-files000002", base_url=sim.url, max_retries=0)
    blocks = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(IMAGE)}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(PDF)}},
        {"type": "text", "text": "Describe"},
    ]
    client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": blocks}])
    assert [a["sha256"] for a in sim_log(sim)[-1]["attachments"]] == [sha(IMAGE), sha(PDF)]
    lying = [{"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": b64(IMAGE)}}]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": lying}])
    assert "does not match the provided media type image/jpeg" in str(bad.value)


def test_gemini_sdk_sends_inline_data_the_simulator_checks(sim):
    genai = pytest.importorskip("google.genai")
    from google.genai import types as gtypes

    options = gtypes.HttpOptions(base_url=sim.url, retry_options=gtypes.HttpRetryOptions(attempts=1))
    client = genai.Client(api_key="sim-ok-files000003", http_options=options)
    parts = [gtypes.Part.from_bytes(data=IMAGE, mime_type="image/png"), "What is this?"]
    client.models.generate_content(model="gemini-2.5-flash", contents=parts)
    assert [a["sha256"] for a in sim_log(sim)[-1]["attachments"]] == [sha(IMAGE)]


# --- stdio: paths inside the client's roots, translated per provider, kept for fallbacks ---


def three_toml(sim, tmp_path: Path, keys: dict[str, str], extra: str = "") -> Path:
    config = tmp_path / "keygate.toml"
    config.write_text(
        f"""
[state]
path = "{tmp_path / "state.db"}"
{extra}

[providers.openai]
type = "openai"
base_url = "{sim.openai_base}"
keys = ["{keys["openai"]}"]

[providers.anthropic]
type = "anthropic"
base_url = "{sim.url}"
keys = ["{keys["anthropic"]}"]

[providers.gemini]
type = "gemini"
base_url = "{sim.url}"
keys = ["{keys["gemini"]}"]

[models.gpt]
provider = "openai"
model = "gpt-4.1-mini"

[models.claude]
provider = "anthropic"
model = "claude-haiku-4-5"

[models.gemini]
provider = "gemini"
model = "gemini-2.5-flash"

[models.textonly]
provider = "openai"
model = "our-text-model"

[routes]
default = ["gpt", "claude", "gemini"]
vision_last = ["textonly", "gpt"]
""",
        encoding="utf-8",
    )
    return config


def roots_of(*folders: Path):
    async def list_roots(context) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=f.resolve().as_uri(), name=f.name) for f in folders])

    return list_roots


def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "notes.md").write_text(NOTES, encoding="utf-8")
    (root / "chart.png").write_bytes(IMAGE)
    (root / "report.pdf").write_bytes(PDF)
    return root


async def test_files_from_the_roots_reach_each_provider_in_its_parts_and_later_fallbacks(sim, tmp_path):
    root = project(tmp_path)
    keys = {"openai": "sim-ok-files-gpt01", "anthropic": "sim-ok-files-claude", "gemini": "sim-ok-files-gemini"}
    httpx2.post(
        f"{sim.url}/_sim/reset",
        json={
            "keys": {keys["openai"]: {"after": 1, "then": "quota"}, keys["anthropic"]: {"after": 1, "then": "quota"}}
        },
    )
    config = three_toml(sim, tmp_path, keys)
    async with Client(server_params(config), list_roots_callback=roots_of(root)) as client:
        first = await client.call_tool(
            "complete",
            {"prompt": "Compare these", "files": ["docs/notes.md", str(root / "report.pdf")], "images": ["chart.png"]},
        )
        assert not first.is_error, first.content
        cid = first.structured_content["conversation_id"]
        second = await client.call_tool("complete", {"prompt": "And now?", "conversation_id": cid})
        third = await client.call_tool("complete", {"prompt": "Once more", "conversation_id": cid})
        history = (await client.call_tool("get_conversation", {"conversation_id": cid})).structured_content
    assert (
        first.structured_content["model"],
        second.structured_content["model"],
        third.structured_content["model"],
    ) == (
        "gpt",
        "claude",
        "gemini",
    )
    served = [e for e in sim_log(sim) if e["outcome"] == "ok"]
    gpt, claude, gemini = served
    parts = gpt["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "Compare these"}
    assert parts[1] == {"type": "text", "text": f"--- docs/notes.md ---\n{NOTES}"}
    assert parts[2]["type"] == "file" and parts[2]["file"]["filename"] == "report.pdf"
    assert parts[3] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(IMAGE)}"}}
    # The fallback models later in the conversation get the same files, in their own parts.
    assert [(a["block"], a["sha256"]) for a in claude["attachments"]] == [("document", sha(PDF)), ("image", sha(IMAGE))]
    assert claude["messages"][0]["content"][0] == {"type": "text", "text": f"--- docs/notes.md ---\n{NOTES}"}
    assert [(a["part"], a["sha256"]) for a in gemini["attachments"]] == [
        ("inline_data", sha(PDF)),
        ("inline_data", sha(IMAGE)),
    ]
    # get_conversation shows references, never the bytes.
    refs = history["turns"][0]["attachments"]
    assert [(r["name"], r["media_type"], r["sha256"], r["size"]) for r in refs] == [
        ("docs/notes.md", "text/plain", sha(NOTES.encode()), len(NOTES)),
        (str(root / "report.pdf"), "application/pdf", sha(PDF), len(PDF)),
        ("chart.png", "image/png", sha(IMAGE), len(IMAGE)),
    ]
    assert b64(IMAGE) not in json.dumps(history) and b64(PDF) not in json.dumps(history)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("/etc/passwd", "is outside the allowed roots"),
        ("../secret.txt", "is outside the allowed roots"),
        ("docs/../../secret.txt", "is outside the allowed roots"),
        ("escape.txt", "is outside the allowed roots"),  # a symlink inside the root, pointing out of it
        ("docs/escape-dir/secret.txt", "is outside the allowed roots"),  # a symlinked folder, pointing out
        ("big.txt", "the limit is 1000 ([limits] max_file_bytes)"),
        ("missing.txt", "does not exist"),
        ("docs", "is not a regular file"),
        ("blob.bin", "is not text, an image (PNG, JPEG, GIF, WebP) or a PDF"),
    ],
)
async def test_attack_paths_outside_the_roots_or_over_the_limits_are_refused(sim, tmp_path, entry, expected):
    root = project(tmp_path)
    (tmp_path / "secret.txt").write_text("the server's secret", encoding="utf-8")
    (root / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (root / "docs" / "escape-dir").symlink_to(tmp_path, target_is_directory=True)
    (root / "big.txt").write_text("x" * 1001, encoding="utf-8")
    (root / "blob.bin").write_bytes(bytes(range(256)))
    keys = {"openai": "sim-ok-files-gpt02", "anthropic": "sim-ok-x", "gemini": "sim-ok-y"}
    config = three_toml(sim, tmp_path, keys, "[limits]\nmax_file_bytes = 1000")
    async with Client(server_params(config), list_roots_callback=roots_of(root)) as client:
        result = await client.call_tool("complete", {"prompt": "Read it", "files": [entry]})
    text = result.content[0].text
    assert result.is_error and f"files[0]: {entry!r}" in text and expected in text, text
    assert "the server's secret" not in text and "Traceback" not in text
    assert sim_log(sim) == []  # nothing was sent


async def test_without_client_roots_the_configs_file_roots_apply_and_without_either_paths_are_refused(sim, tmp_path):
    root = project(tmp_path)
    keys = {"openai": "sim-ok-files-gpt03", "anthropic": "sim-ok-x", "gemini": "sim-ok-y"}
    bare = three_toml(sim, tmp_path, keys)
    async with Client(server_params(bare)) as client:  # a client that declares no roots
        refused = await client.call_tool("complete", {"prompt": "Read it", "images": [str(root / "chart.png")]})
    assert refused.is_error and "no roots to read files from" in refused.content[0].text
    rooted = three_toml(sim, tmp_path, keys, f'[server]\nfile_roots = ["{root}"]')
    async with Client(server_params(rooted)) as client:
        allowed = await client.call_tool("complete", {"prompt": "Read it", "images": [str(root / "chart.png")]})
        outside = await client.call_tool("complete", {"prompt": "Read it", "files": [str(tmp_path / "keygate.toml")]})
        not_image = await client.call_tool("complete", {"prompt": "Read it", "images": ["docs/notes.md"]})
    assert not allowed.is_error, allowed.content
    assert outside.is_error and "outside the allowed roots" in outside.content[0].text
    assert not_image.is_error and "is text/plain, not an image" in not_image.content[0].text


async def test_a_model_that_cannot_take_images_is_skipped_and_the_route_falls_back(sim, tmp_path):
    root = project(tmp_path)
    keys = {"openai": "sim-ok-files-gpt04", "anthropic": "sim-ok-x", "gemini": "sim-ok-y"}
    config = three_toml(sim, tmp_path, keys)
    async with Client(server_params(config), list_roots_callback=roots_of(root)) as client:
        routed = await client.call_tool("complete", {"prompt": "Look", "model": "vision_last", "images": ["chart.png"]})
        nowhere = await client.call_tool("complete", {"prompt": "Look", "model": "textonly", "images": ["chart.png"]})
        text_ok = await client.call_tool(
            "complete", {"prompt": "Read", "model": "textonly", "files": ["docs/notes.md"]}
        )
    attempts = routed.structured_content["attempts"]
    assert [(a["model"], a["outcome"]) for a in attempts] == [("textonly", "unsupported_input"), ("gpt", "ok")]
    assert (
        nowhere.is_error and "No model of [textonly] takes image input, so nothing was sent" in nowhere.content[0].text
    )
    assert "set [models.textonly] modalities if it does" in nowhere.content[0].text
    assert not text_ok.is_error  # a text file is text: every model takes it
    assert [e["model"] for e in sim_log(sim)] == ["gpt-4.1-mini", "our-text-model"]


# --- HTTP: inline content only ---


async def test_over_http_a_path_is_refused_and_inline_content_goes_through(sim, tmp_path):
    root = project(tmp_path)
    keys = {"openai": "sim-ok-files-gpt05", "anthropic": "sim-ok-files-cl05", "gemini": "sim-ok-y"}
    # Even with file_roots configured, a remote caller never makes the server read its disk.
    config = three_toml(sim, tmp_path, keys, f'[server]\nfile_roots = ["{root}"]')
    server = ServerProcess(config, free_port(), {})
    try:
        server.wait_ready()
        async with streamable(server.url, None) as session:
            path = await session.call_tool("complete", {"prompt": "x", "images": [str(root / "chart.png")]})
            inline = await session.call_tool(
                "complete",
                {
                    "prompt": "What are these?",
                    "model": "claude",
                    "images": [{"type": "image", "data": b64(IMAGE), "mimeType": "image/png"}],
                    "files": [
                        {"data": b64(PDF), "media_type": "application/pdf", "name": "report.pdf"},
                        {
                            "type": "resource",
                            "resource": {"uri": "file:///notes.md", "mimeType": "text/markdown", "text": NOTES},
                        },
                    ],
                },
            )
            malformed = await session.call_tool(
                "complete", {"prompt": "x", "images": [{"data": "not base64!!", "media_type": "image/png"}]}
            )
            lying = await session.call_tool(
                "complete", {"prompt": "x", "images": [{"data": b64(b"GIF89a" + bytes(20)), "media_type": "image/png"}]}
            )
            no_type = await session.call_tool("complete", {"prompt": "x", "files": [{"data": b64(PDF)}]})
    finally:
        server.stop()
    assert path.is_error and "a path cannot be sent over HTTP" in path.content[0].text
    assert not inline.is_error, inline.content
    sent = sim_log(sim)[-1]
    assert sent["api"] == "anthropic"
    assert [(a["block"], a["sha256"]) for a in sent["attachments"]] == [("document", sha(PDF)), ("image", sha(IMAGE))]
    assert sent["messages"][0]["content"][1] == {"type": "text", "text": f"--- file:///notes.md ---\n{NOTES}"}
    assert malformed.is_error and "images[0]: data is not valid base64" in malformed.content[0].text
    assert lying.is_error and "images[0]: the data is not image/png (it looks like image/gif)" in lying.content[0].text
    assert no_type.is_error and "files[0]: media_type is required" in no_type.content[0].text
    assert len(sim_log(sim)) == 1


# --- the store: once by hash, with a cap; presets that declare files ---


async def test_attachments_are_stored_once_by_hash_and_the_store_has_a_cap(sim, tmp_path):
    image = Attachment("a.png", "image/png", sha(IMAGE), len(IMAGE), IMAGE)
    other = png(seed=7)
    data = {
        "state": {"path": str(tmp_path / "state.db")},
        "limits": {"max_stored_attachment_bytes": len(IMAGE) + 10},
        "providers": {"openai": {"type": "openai", "base_url": sim.openai_base, "keys": ["sim-ok-files-gpt06"]}},
        "models": {"gpt": {"provider": "openai", "model": "gpt-4.1-mini"}},
    }
    async with Keygate(parse_config(data)) as gate:
        one = await gate.complete(CompleteRequest(prompt="one", attachments=(image,)))
        await gate.complete(CompleteRequest(prompt="two", attachments=(image,)))  # the same bytes again
        stored = await gate.store.blob_bytes()
        with pytest.raises(Exception) as full:
            await gate.complete(
                CompleteRequest(
                    prompt="three", attachments=(Attachment("b.png", "image/png", sha(other), len(other), other),)
                )
            )
        turns = await gate.store.get_turns(one.conversation_id)
    assert stored == len(IMAGE)
    assert "max_stored_attachment_bytes" in str(full.value)
    assert turns is not None and turns[0].attachments == (image.reference(),) and turns[0].attachments[0].data is None


async def test_a_preset_that_declares_files_takes_them_and_others_do_not(sim, tmp_path):
    root = project(tmp_path)
    keys = {"openai": "sim-ok-files-gpt07", "anthropic": "sim-ok-x", "gemini": "sim-ok-y"}
    presets = """
[presets.describe]
description = "Describe an image."
template = "Describe this for {audience}."
route = "gpt"
images = true
[presets.describe.parameters]
audience = 'str = "a child"'

[presets.plain]
description = "No files."
template = "Say hi."
route = "gpt"
"""
    config = three_toml(sim, tmp_path, keys)
    config.write_text(config.read_text(encoding="utf-8") + presets, encoding="utf-8")
    async with Client(server_params(config), list_roots_callback=roots_of(root)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        described = await client.call_tool("describe", {"images": ["chart.png"]})
        refused = await client.call_tool("plain", {"images": ["chart.png"]})
    assert "images" in tools["describe"].input_schema["properties"]
    assert "images" not in tools["plain"].input_schema["properties"]
    assert not described.is_error, described.content
    assert sim_log(sim)[-1]["attachments"][0]["sha256"] == sha(IMAGE)
    assert refused.is_error and "unknown argument(s) 'images'" in refused.content[0].text


async def test_a_route_with_no_model_for_images_fails_before_anything_is_sent(sim):
    data = {
        "state": {"backend": "memory"},
        "providers": {"p": {"type": "openai", "base_url": sim.openai_base, "keys": ["sim-ok-files-gpt08"]}},
        "models": {
            "local": {"provider": "p", "model": "qwen-text"},
            "tagged": {"provider": "p", "model": "x", "modalities": ["image"]},
        },
        "routes": {"default": ["local"]},
    }
    image = Attachment("a.png", "image/png", sha(IMAGE), len(IMAGE), IMAGE)
    pdf = Attachment("r.pdf", "application/pdf", sha(PDF), len(PDF), PDF)
    async with Keygate(parse_config(data)) as gate:
        with pytest.raises(RouteFailed) as failed:
            await gate.complete(CompleteRequest(prompt="look", attachments=(image,)))
        tagged = await gate.complete(CompleteRequest(prompt="look", model="tagged", attachments=(image,)))
        with pytest.raises(RouteFailed) as no_pdf:
            await gate.complete(CompleteRequest(prompt="read", model="tagged", attachments=(pdf,)))
    assert "takes image input" in str(failed.value) and [a.outcome for a in failed.value.attempts] == [
        "unsupported_input"
    ]
    assert tagged.model == "tagged"  # declared modalities win over the name
    assert "takes pdf input" in str(no_pdf.value)
    assert len(sim_log(sim)) == 1


def test_the_readme_files_example_is_valid_config():
    import re
    import tomllib

    from .conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = [tomllib.loads(b) for b in re.findall(r"```toml\n(.*?)```", readme, re.S)]
    found = next(b for b in blocks if "local-llava" in b.get("models", {}))
    config = parse_config({"providers": {"ollama": {"type": "ollama"}}, **found})
    assert config.models["local-llava"].modalities == ["image"] and config.limits.max_attachments == 10


async def test_on_redis_attachments_are_kept_once_and_reach_a_later_model(sim, redis_url):
    from .redis_support import unique_prefix

    data = {
        "state": {"backend": "redis", "url": redis_url, "prefix": unique_prefix()},
        "providers": {
            "openai": {"type": "openai", "base_url": sim.openai_base, "keys": ["sim-ok-files-gpt09"]},
            "gemini": {"type": "gemini", "base_url": sim.url, "keys": ["sim-ok-files-gem09"]},
        },
        "models": {
            "gpt": {"provider": "openai", "model": "gpt-4.1-mini"},
            "flash": {"provider": "gemini", "model": "gemini-2.5-flash"},
        },
    }
    image = Attachment("a.png", "image/png", sha(IMAGE), len(IMAGE), IMAGE)
    async with Keygate(parse_config(data)) as gate:
        first = await gate.complete(CompleteRequest(prompt="look", model="gpt", attachments=(image,)))
        again = await gate.complete(CompleteRequest(prompt="again", model="gpt", attachments=(image,)))
        later = await gate.complete(
            CompleteRequest(prompt="and you?", model="flash", conversation_id=first.conversation_id)
        )
        stored = await gate.store.blob_bytes()
        history = await gate.views.get_conversation(first.conversation_id)
    assert again.model == "gpt" and later.model == "flash" and stored == len(IMAGE)
    assert [a["sha256"] for a in sim_log(sim)[-1]["attachments"]] == [sha(IMAGE)]
    assert history.turns[0].attachments[0].sha256 == sha(IMAGE)


def test_attack_inline_content_over_the_limits_is_refused_before_it_is_decoded():
    from mcp_keygate.attachments import Gatherer
    from mcp_keygate.config import LimitsConfig
    from mcp_keygate.errors import InvalidRequest

    limits = LimitsConfig(max_file_bytes=100, max_attachments=2, max_attachment_bytes=150)
    remote = Gatherer(limits, None, remote=True)
    with pytest.raises(InvalidRequest, match=r"files\[0\]: over 100 bytes once decoded"):
        remote.gather([{"data": "A" * 10_000_000, "media_type": "text/plain"}], None)
    with pytest.raises(InvalidRequest, match=r"3 attachments, the limit is 2 \(\[limits\] max_attachments\)"):
        Gatherer(limits, None, True).gather([{"text": "a"}, {"text": "b"}, {"text": "c"}], None)
    with pytest.raises(InvalidRequest, match=r"files\[1\]: the attachments come to more than 150 bytes"):
        Gatherer(limits, None, True).gather([{"text": "a" * 90}, {"text": "b" * 90}], None)
    with pytest.raises(InvalidRequest, match=r"images\[0\]: expected a path \(stdio only\) or inline content"):
        Gatherer(limits, None, True).gather(None, [42])
    found = Gatherer(limits, None, True).gather([{"data": b64(b"# notes"), "media_type": "text/markdown"}], None)
    assert found[0].media_type == "text/plain" and found[0].data == b"# notes"
