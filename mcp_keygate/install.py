"""`mcp-keygate install claude-desktop | claude-code | cursor`: register the server in a client's config.

It merges one entry into the client's `mcpServers`, shows that entry's change first (values that may be
secrets shown redacted), keeps a backup, and never writes a secret: the entry points at a config file whose
keys are environment references. The rest of the file is carried over value for value, in its key order.

The entry starts the server the way that lasts: this installation's `mcp-keygate` script by absolute path
(GUI clients do not see the shell's PATH), `uvx mcp-keygate` when running from uv's throwaway cache, else
this Python with `-m mcp_keygate`. Its `env` block names every variable the keygate config references, as
`<set NAME>` placeholders (or, with --env-from-shell, this shell's values); values already there stay.

The write is atomic (a temporary file in the same directory, then a rename), keeps the file's permission
bits (a new file is 0600: client configs hold other servers' keys), and goes through a symlink to the file
it points at. Anything that stops it is one `InstallError` line that names the file and the way out; the
file is then left exactly as it was.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

CLIENTS = ("claude-desktop", "claude-code", "cursor")
SCOPES = ("user", "project")  # Claude Code's: ~/.claude.json for every project, or .mcp.json in this one
SCRIPT = "mcp-keygate"
STARTER = "keygate.example.toml"  # shipped inside the package: `mcp-keygate init` copies it

REDACTED = "…(redacted)"
_SECRET_MAPS = {"env", "environment", "headers", "requestinit"}  # every value under these is hidden
_SECRET_NAME = re.compile(r"key|token|secret|passw|pwd|auth|credential|cookie|bearer|session|private|signature", re.I)
_TOKEN_PREFIX = re.compile(r"^(sk|pk|rk|ghp|gho|ghu|ghs|ghr|github_pat|glpat|xox[abprs]|AKIA|ASIA|AIza|hf)[-_]?\w{6,}")
_REMOTE_KEYS = ("url", "serverUrl", "headers", "requestInit")  # a stdio entry has no use for these
_DISPLAY_DEPTH = 32
_MISSING = object()
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # as config._ENV_REF (not imported: no pydantic here)
_PLACEHOLDER = re.compile(r"<set [A-Za-z_][A-Za-z0-9_]*>")
_UV_BUCKET = re.compile(r"(archive|builds)-v\d+")  # uv's cache: uvx environments, build environments


class InstallError(Exception):
    pass


def default_path(client: str, scope: str | None = None) -> Path:
    """Where each client keeps its MCP servers on this platform (Claude Code: in the given scope, user by default)."""
    home = Path.home()
    if client == "claude-desktop":
        if sys.platform == "darwin":
            return home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
        if sys.platform == "win32":
            return (
                Path(os.environ.get("APPDATA", home / "AppData" / "Roaming")) / "Claude" / "claude_desktop_config.json"
            )
        return home / ".config" / "Claude" / "claude_desktop_config.json"
    if client == "claude-code":
        if scope == "project":
            return Path.cwd() / ".mcp.json"  # shared with the repository
        # `claude mcp add -s user`: top-level mcpServers of ~/.claude.json (in $CLAUDE_CONFIG_DIR when set)
        config_dir = os.environ.get("CLAUDE_CONFIG_DIR")
        return (Path(config_dir).expanduser() if config_dir else home) / ".claude.json"
    if client == "cursor":
        return home / ".cursor" / "mcp.json"
    raise InstallError(f"unknown client {client!r}; expected one of {', '.join(CLIENTS)}")


# ---- how the client should start the server ----


@dataclass(frozen=True)
class Launch:
    command: str
    prefix: tuple[str, ...]  # the arguments before `serve`
    reason: str  # why this command, for one line of output


def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(os.path.expanduser(path)))


def _uv_cache_dirs(environ: Mapping[str, str]) -> list[Path]:
    home = Path.home()
    dirs = [Path(environ["UV_CACHE_DIR"])] if environ.get("UV_CACHE_DIR") else []
    dirs.append(Path(environ.get("XDG_CACHE_HOME") or home / ".cache") / "uv")
    dirs.append(home / "Library" / "Caches" / "uv")  # macOS
    if environ.get("LOCALAPPDATA"):
        dirs.append(Path(environ["LOCALAPPDATA"]) / "uv" / "cache")  # Windows
    return dirs


def _throwaway(path: Path | str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """Which tool's cache `path` lies in ("uv" or "pipx") and where, when it will not last; else None."""
    real = _real(path)
    for cache in _uv_cache_dirs(environ):
        if real.is_relative_to(_real(cache)):
            return "uv", f"uv's cache ({_show(cache)})"
    parts = real.parts
    if any(_UV_BUCKET.fullmatch(p) for p in parts) and (
        "uv" in parts or any(p.startswith(".tmp") for p in parts) or environ.get("UV")
    ):
        return "uv", f"a uv cache ({_show(real)})"
    if "pipx" in parts and ".cache" in parts[parts.index("pipx") :]:
        return "pipx", f"pipx run's cache ({_show(real)})"
    return None


def _installed_from() -> str | None:
    """Where this package came from when not from an index (a checkout, a git URL: PEP 610), for `uvx --from`."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        text = distribution(SCRIPT).read_text("direct_url.json")
        info = json.loads(text) if text else None
    except (PackageNotFoundError, OSError, ValueError):
        return None
    url = info.get("url") if isinstance(info, dict) else None
    if not isinstance(url, str) or not url:
        return None
    vcs = info.get("vcs_info") if isinstance(info, dict) else None
    if isinstance(vcs, dict) and vcs.get("vcs") == "git":
        revision = vcs.get("requested_revision") or vcs.get("commit_id")
        return f"git+{url}" + (f"@{revision}" if isinstance(revision, str) and revision else "")
    if url.startswith("file://"):
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        return url2pathname(urlparse(url).path)
    return url


def _in_temp(path: Path | str) -> bool:
    return _real(path).is_relative_to(_real(tempfile.gettempdir()))


def _script(path: Path | str | None) -> Path | None:
    if path is None:
        return None
    candidate = Path(path).absolute()  # not resolved: a Homebrew or ~/.local/bin link outlives its target's version
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def launch(environ: Mapping[str, str] | None = None) -> Launch:
    """The command that will still start this server after this shell, and this cache, are gone."""
    environ = os.environ if environ is None else environ
    exe = ".exe" if sys.platform == "win32" else ""
    cached = _throwaway(sys.prefix, environ)
    if cached is not None:
        tool, where = cached
        runner = "pipx" if tool == "pipx" else "uvx"
        found = _script(shutil.which(runner))
        if found is None and tool == "uv" and environ.get("UV"):  # uv says where it is; uvx sits beside it
            found = _script(Path(environ["UV"]).with_name("uvx" + exe))
        if found is not None and _throwaway(found, environ):
            found = None
        source = _installed_from()
        if tool == "pipx":
            prefix: tuple[str, ...] = ("run", "--spec", source, SCRIPT) if source else ("run", SCRIPT)
        else:
            prefix = ("--from", source, SCRIPT) if source else (SCRIPT,)
        return Launch(
            str(found or runner),
            prefix,
            f"running from {where}, which {tool} clears: the client starts it through {runner}"
            + ("" if found else " (not found on PATH here: a GUI app may need its absolute path)"),
        )
    note = ""
    local = _script(Path(sys.executable).absolute().parent / (SCRIPT + exe))
    found = local or _script(shutil.which(SCRIPT))
    if found is not None and not _throwaway(found, environ):
        if _in_temp(found):
            note = "; it is under the temporary directory: run install again if it goes away"
        why = "this installation's script" if found == local else "the mcp-keygate on PATH"
        return Launch(str(found), (), f"{why}, by absolute path (GUI apps do not see your shell's PATH){note}")
    if _in_temp(sys.executable):
        note = "; it is under the temporary directory: run install again if it goes away"
    return Launch(
        sys.executable,
        ("-m", "mcp_keygate"),
        f"no mcp-keygate script next to this Python or on PATH: this Python{note}",
    )


def server_entry(config: Path | None, how: Launch | None = None) -> dict:
    """How the client should start the server: a lasting command, an absolute config path."""
    how = how or launch()
    args = [*how.prefix, "serve"]
    if config is not None:
        args += ["--config", str(config.expanduser().resolve())]
    return {"command": how.command, "args": args}


# ---- the variables the server needs ----


def _references(value: object, found: dict[str, None]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _references(key, found)
            _references(item, found)
    elif isinstance(value, list):
        for item in value:
            _references(item, found)
    elif isinstance(value, str):
        found.update(dict.fromkeys(_ENV_REF.findall(value)))


def referenced_variables(config: Path | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every `${VAR}` the config uses (not those in comments), in order; without a config, the variables
    zero-config would read that are set in this shell."""
    environ = os.environ if environ is None else environ
    if config is None:
        from .provider_types import PROVIDER_TYPES

        names = []
        for info in PROVIDER_TYPES.values():
            if info.env_prefix is not None:
                p = info.env_prefix
                names += [f"{p}_API_KEYS", f"{p}_API_KEY", *info.extra_env_keys, f"{p}_BASE_URL"]
        return [name for name in names if environ.get(name)]
    try:
        text = config.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InstallError(f"--config {_show(config)} is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise InstallError(f"--config {_show(config)}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InstallError(
            f"--config {_show(config)} is not valid TOML ({exc}); fix it (mcp-keygate check --config FILE tells more)"
        ) from None
    found: dict[str, None] = {}
    _references(data, found)
    return list(found)


def placeholder(name: str) -> str:
    return f"<set {name}>"


def _unset(value: object) -> bool:
    return value is None or value == "" or (isinstance(value, str) and _PLACEHOLDER.fullmatch(value) is not None)


def env_block(names: list[str], existing: object, from_shell: bool, environ: Mapping[str, str]) -> dict:
    """The entry's env: what the user wrote stays; each referenced variable missing (or still a placeholder)
    gets this shell's value with `from_shell`, else a placeholder; an empty value the user left stays empty."""
    env = dict(existing) if isinstance(existing, dict) else {}
    for name in names:
        current = env.get(name)
        if not _unset(current):
            continue
        if from_shell and environ.get(name):
            env[name] = environ[name]
        elif current != "":
            env[name] = placeholder(name)
    return env


def unfilled(names: list[str], env: object) -> list[str]:
    return [name for name in names if not isinstance(env, dict) or _unset(env.get(name))]


def snippet(
    client: str, config: Path | None, name: str, scope: str | None = None, env_from_shell: bool = False
) -> tuple[dict, Launch, list[str]]:
    """The `mcpServers` snippet `--print` shows, how it starts, and the variables still to fill in."""
    config = _checked_config(config, client, scope, env_from_shell)
    if env_from_shell:
        raise InstallError("--env-from-shell with --print would print your keys; leave out --print to write them")
    how = launch()
    entry = _client_entry(client, server_entry(config, how))
    names = referenced_variables(config)
    if names:
        entry["env"] = env_block(names, None, False, os.environ)
    return {"mcpServers": {name: entry}}, how, names


def _client_entry(client: str, entry: dict) -> dict:
    return {"type": "stdio", **entry} if client == "claude-code" else entry  # as `claude mcp add` writes it


def _checked_config(config: Path | None, client: str, scope: str | None, env_from_shell: bool) -> Path | None:
    if scope is not None and client != "claude-code":
        raise InstallError(f"--scope is for claude-code only; {client} has one config file (--path picks another)")
    if env_from_shell and client == "claude-code" and scope == "project":
        raise InstallError(
            "--env-from-shell would write your keys into .mcp.json, which is shared with the repository;"
            " use the user scope (the default) or fill in the env block elsewhere"
        )
    if config is None:
        return None
    config = config.expanduser()
    if config.is_dir():
        raise InstallError(f"--config {_show(config)} is a directory; pass the keygate TOML file")
    if not config.exists():
        raise InstallError(f"--config {_show(config)}: file not found (mcp-keygate init writes a starter config)")
    return config


# ---- showing a path or an entry without leaking or garbling anything ----


def _show(path: Path | str) -> str:
    """A path for one line of output: control characters (a newline in a file name) escaped."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: m.group().encode("unicode_escape").decode("ascii"), str(path))


def _tokenish(text: str) -> bool:
    """Shaped like a credential: a known key prefix, or long with letters and digits and no separators."""
    if _TOKEN_PREFIX.match(text):
        return True
    shaped = len(text) >= 20 and re.fullmatch(r"[A-Za-z0-9_\-.+=:]+", text)
    return bool(shaped and re.search(r"\d", text) and re.search(r"[A-Za-z]", text))


def _redact_string(text: str) -> str:
    if "://" in text:  # credentials, query values and token-like path segments (webhook URLs) in a URL
        text = re.sub(r"(://)[^/@\s]*@", rf"\1{REDACTED}@", text)
        text = re.sub(r"([?&#][^=&#\s]+=)[^&#\s]*", rf"\1{REDACTED}", text)
        return re.sub(r"(?<=/)[^/?#\s]+", lambda m: REDACTED if _tokenish(m.group()) else m.group(), text)
    name, eq, value = text.partition("=")
    if eq and value and _SECRET_NAME.search(name):  # API_KEY=…, --token=…
        return f"{name}={REDACTED}"
    if text.lower().startswith(("bearer ", "basic ", "token ")):  # an Authorization value
        return f"{text.split(' ', 1)[0]} {REDACTED}"
    return REDACTED if _tokenish(text) else text


def redacted(value, depth: int = 0):
    """A copy of `value` fit to print: env and header values, and anything named or shaped like a secret, hidden."""
    if depth > _DISPLAY_DEPTH:
        return REDACTED
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if str(key).lower() in _SECRET_MAPS:  # a `<set NAME>` placeholder is no secret: it shows what to fill in
                out[key] = (
                    {k: v if isinstance(v, str) and _PLACEHOLDER.fullmatch(v) else REDACTED for k, v in item.items()}
                    if isinstance(item, dict)
                    else REDACTED
                )
            elif _SECRET_NAME.search(str(key)):
                out[key] = REDACTED
            else:
                out[key] = redacted(item, depth + 1)
        return out
    if isinstance(value, list):
        out_list: list = []
        hide_next = False
        for item in value:
            if hide_next:
                out_list.append(REDACTED)
                hide_next = False
            elif isinstance(item, str) and item.startswith("-") and "=" not in item and _SECRET_NAME.search(item):
                out_list.append(item)  # `--api-key VALUE`: the flag stays, its value goes
                hide_next = True
            else:
                out_list.append(redacted(item, depth + 1))
        return out_list
    if isinstance(value, str):
        return _redact_string(value)
    return value


def _entry_lines(name: str, entry) -> list[str]:
    """`"name": {...}` as it sits under mcpServers (indented 4), redacted; [] when there is no entry."""
    if entry is _MISSING:
        return []
    text = f"{_printable_json(name)}: {_printable_json(redacted(entry), indent=2)}"
    return [f"    {line}\n" for line in text.split("\n")]


def _printable_json(value, indent: int | None = None) -> str:
    """JSON for a terminal: anything not printable (C1 controls, bidi overrides, U+2028) stays \\u-escaped."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    return "".join(ch if ch.isprintable() or ch in "\n " else f"\\u{ord(ch):04x}" for ch in text)


# ---- reading ----


def _nearest_directory(path: Path) -> Path:
    """The closest existing ancestor of `path`, which must be a directory we could create the rest under."""
    for parent in path.parents:
        if not os.path.lexists(parent):
            continue
        if parent.is_symlink() and not parent.exists():
            raise InstallError(
                f"{_show(path)}: {_show(parent)} is a symlink to {_show(os.readlink(parent))}, which does not exist;"
                " create it or pass --path elsewhere"
            )
        if not parent.is_dir():
            raise InstallError(
                f"{_show(path)}: {_show(parent)} is a file, not a directory; pass --path with a file in a directory"
            )
        return parent
    raise InstallError(f"{_show(path)}: no existing directory above it; pass --path elsewhere")


def _real_path(target: Path) -> Path:
    """The file to read and replace: `target`, or what it links to (the link itself stays a link)."""
    if not target.is_symlink():
        return target
    try:
        return target.resolve(strict=True)
    except FileNotFoundError:
        raise InstallError(
            f"{_show(target)} is a symlink to {_show(os.readlink(target))}, which does not exist;"
            " create that file (it may be empty) or pass --path with the real file"
        ) from None
    except (RuntimeError, OSError) as exc:  # a symlink loop: RuntimeError up to 3.12, OSError(ELOOP) after
        raise InstallError(f"{_show(target)}: cannot follow the symlink ({exc}); fix the link or pass --path") from None


def _read(path: Path) -> bytes | None:
    """The file's bytes, or None when there is no file yet (its directory must be creatable)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        _nearest_directory(path)
        return None
    except NotADirectoryError:
        _nearest_directory(path)  # raises: some parent is a file
        raise InstallError(f"{_show(path)}: a parent is not a directory; pass --path elsewhere") from None
    except PermissionError:
        raise InstallError(
            f"cannot look at {_show(path)} (permission denied); check the permissions of its directories"
        ) from None
    except OSError as exc:
        raise InstallError(f"cannot look at {_show(path)} ({exc.strerror or exc}); pass --path elsewhere") from None
    if stat.S_ISDIR(info.st_mode):
        raise InstallError(
            f"{_show(path)} is a directory, not a file; pass --path with the JSON file inside it"
            f" (e.g. {_show(path / 'mcp.json')})"
        )
    if not stat.S_ISREG(info.st_mode):
        raise InstallError(f"{_show(path)} is not a regular file; pass --path with the client's JSON config file")
    try:
        with open(path, "rb") as file:
            return file.read()
    except PermissionError:
        raise InstallError(
            f"cannot read {_show(path)} (permission denied); run as its owner or fix its permissions (chmod u+r)"
        ) from None
    except OSError as exc:
        raise InstallError(f"cannot read {_show(path)} ({exc.strerror or exc})") from None


# ---- parsing and serialising ----


class _Layout:
    """How the file was written, so the rewrite changes as little as possible."""

    def __init__(self, text: str, bom: bool):
        self.bom = bom
        self.crlf = "\r\n" in text
        found = re.search(r"\n([ \t]+)\S", text)
        if found and found.group(1).startswith("\t"):
            self.indent: str | int = "\t"
        elif found and len(found.group(1)) <= 8:
            self.indent = len(found.group(1))
        else:
            self.indent = 2


def _decode(raw: bytes, path: Path) -> tuple[str, _Layout]:
    bom = raw.startswith(b"\xef\xbb\xbf")  # Windows editors write one; keep it
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InstallError(
            f"{_show(path)} is not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r});"
            " save it as UTF-8 or pass --path to write elsewhere"
        ) from None
    return text, _Layout(text, bom)


def _parse(text: str, path: Path) -> dict:
    def pairs(items: list[tuple[str, object]]) -> dict:
        obj: dict = {}
        for key, value in items:
            if key in obj:
                raise InstallError(
                    f"{_show(path)} has the key {json.dumps(key)} twice in one object; rewriting it would drop one,"
                    " so remove the duplicate first"
                )
            obj[key] = value
        return obj

    def number(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise InstallError(f"{_show(path)}: the number {literal[:40]} is out of range; fix it first")
        return value

    def constant(literal: str):
        raise InstallError(f"{_show(path)} is not valid JSON ({literal} is not a JSON value); fix it first")

    if not text.strip():
        return {}
    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_float=number, parse_constant=constant)
    except RecursionError:
        raise InstallError(
            f"{_show(path)} is nested too deeply to be a client config; fix it or pass --path to write elsewhere"
        ) from None
    except ValueError as exc:
        raise InstallError(
            f"{_show(path)} is not valid JSON ({exc}); fix it (comments and trailing commas are not JSON)"
            " or pass --path to write elsewhere"
        ) from None
    if not isinstance(data, dict):
        raise InstallError(f"{_show(path)} does not hold a JSON object; fix it or pass --path to write elsewhere")
    return data


def _serialise(data: dict, layout: _Layout, path: Path) -> bytes:
    try:
        text = json.dumps(data, indent=layout.indent, ensure_ascii=False) + "\n"
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (\ud800) in some string: keep it escaped as it was
            raw = (json.dumps(data, indent=layout.indent) + "\n").encode("utf-8")
    except RecursionError:
        raise InstallError(f"{_show(path)} is nested too deeply to rewrite; fix it or pass --path") from None
    if layout.crlf:
        raw = raw.replace(b"\n", b"\r\n")
    return (b"\xef\xbb\xbf" if layout.bom else b"") + raw


def _merged_entry(existing, name: str, entry: dict, path: Path) -> dict:
    """Our entry, keeping what the user added to an earlier one (env, cwd, disabled…) but not a remote transport."""
    if existing is _MISSING:
        return dict(entry)
    if not isinstance(existing, dict):
        kind = {str: "a string", list: "a list", bool: "a boolean", int: "a number", float: "a number"}.get(
            type(existing), "null"
        )
        raise InstallError(
            f"{_show(path)}: mcpServers.{_show(name)} is {kind}, not an object; remove that entry or pass --name"
            " to install under another name"
        )
    result = {k: v for k, v in existing.items() if k not in _REMOTE_KEYS}
    for key in ("type", "transport"):
        if key in result and result[key] != "stdio":
            del result[key]
    result.update(entry)
    return result


# ---- writing ----


def _check_writable(real: Path, exists: bool) -> None:
    directory = real.parent if exists else _nearest_directory(real)
    if exists and not os.access(real, os.W_OK):
        raise InstallError(
            f"{_show(real)} is read-only (permission denied); make it writable (chmod u+w) or run as its owner"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InstallError(
            f"cannot write in {_show(directory)} (permission denied), where {_show(real.name)} and its backup go;"
            " fix the directory's permissions or pass --path elsewhere"
        )


def _backup(real: Path, raw: bytes, mode: int) -> Path:
    """A copy of the original next to it; never overwrites an earlier backup (two runs in one second)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(100):
        backup = real.with_name(f"{real.name}.bak-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(raw)
            os.chmod(backup, mode)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(backup)
            raise
        return backup
    raise InstallError(f"too many backups of {_show(real)} this second; run again")


def _write(real: Path, original: bytes | None, new: bytes) -> Path | None:
    """Replace `real` with `new` atomically, after a backup; returns the backup. On any failure nothing changed."""
    info = os.stat(real) if original is not None else None
    if info is None:
        real.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)  # 0600
    tmp = Path(tmp_name)
    backup = None
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(new)
            file.flush()
            os.fsync(file.fileno())
        if info is not None:
            os.chmod(tmp, stat.S_IMODE(info.st_mode))
            if hasattr(os, "chown") and (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(OSError):  # as root (sudo) the file stays its owner's
                    os.chown(tmp, info.st_uid, info.st_gid)
        current = _read(real)
        if current != original:
            raise InstallError(f"{_show(real)} changed while this was waiting; nothing written, run again")
        if original is not None and info is not None:
            backup = _backup(real, original, stat.S_IMODE(info.st_mode))
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if backup is not None:
            with contextlib.suppress(OSError):
                backup.unlink()
        raise
    return backup


def install(
    client: str,
    config: Path | None,
    name: str,
    path: Path | None,
    write: bool,
    confirm,
    scope: str | None = None,
    env_from_shell: bool = False,
) -> int:
    """Show the change to our entry; write it (with a backup) when `write`, or when `confirm()` says yes."""
    config = _checked_config(config, client, scope, env_from_shell)
    names = referenced_variables(config)
    target = path.expanduser() if path is not None else default_path(client, scope)
    real = _real_path(target)
    original = _read(real)
    text, layout = _decode(original, real) if original is not None else ("", _Layout("", False))
    data = _parse(text, real)
    servers = data.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise InstallError(f"{_show(real)}: mcpServers is not an object; fix it or pass --path to write elsewhere")
    before = servers.get(name, _MISSING)
    how = launch()
    after = _merged_entry(before, name, _client_entry(client, server_entry(config, how)), real)
    old_env = after.get("env", _MISSING)
    if old_env is not _MISSING and not isinstance(old_env, dict):
        raise InstallError(
            f"{_show(real)}: mcpServers.{_show(name)}.env is not an object; fix it or remove it, then run again"
        )
    if names or old_env is not _MISSING:
        after["env"] = env_block(names, old_env if old_env is not _MISSING else None, env_from_shell, os.environ)
    where = _show(target) if real == target else f"{_show(target)} -> {_show(real)}"
    print(f"Command: {_show(how.command)} — {how.reason}.")
    try:
        unchanged = before == after
    except RecursionError:
        raise InstallError(f"{_show(real)}: mcpServers.{_show(name)} is nested too deeply; fix it first") from None
    if unchanged:
        print(f"{_show(target)} already has this entry; nothing to do.")
        _tell_env(names, after.get("env"), where, name, env_from_shell)
        return 0
    servers[name] = after  # in place: the entry keeps its position, everything else its order and values
    new = _serialise(data, layout, real)
    _check_writable(real, original is not None)

    label = f"mcpServers[{_printable_json(name)}]"
    diff = difflib.unified_diff(
        _entry_lines(name, before), _entry_lines(name, after), f"{where} {label}", f"{where} {label} (new)"
    )
    sys.stdout.writelines(diff)
    print(f"(only this entry changes; env, header and token-like values are shown as {REDACTED})")
    if not (write or confirm()):
        print("Nothing written.")
        return 1
    try:
        backup = _write(real, original, new)
    except PermissionError as exc:
        raise InstallError(
            f"cannot write {_show(real)} (permission denied on {_show(exc.filename or real)}); nothing was changed,"
            " fix the permissions or pass --path elsewhere"
        ) from None
    except OSError as exc:
        raise InstallError(f"cannot write {_show(real)} ({exc.strerror or exc}); nothing was changed") from None
    if backup is not None:
        print(f"Backup: {_show(backup)}")
    print(f"Wrote {where}. Restart {client} to load mcp-keygate.")
    _tell_env(names, after.get("env"), where, name, env_from_shell)
    if client == "claude-code" and scope != "project":
        _tell_shadowing(data, name)
    return 0


def _tell_env(names: list[str], env: object, where: str, name: str, env_from_shell: bool) -> None:
    """One line: which referenced variables still have no value in the entry."""
    if not names:
        return
    missing = unfilled(names, env)
    if not missing:
        print(f"env: all {len(names)} variable(s) the config references have a value in the entry.")
        return
    way = (
        " (they are not set in this shell either)" if env_from_shell else ", or run install again with --env-from-shell"
    )
    print(
        f"Still to fill in: {', '.join(missing)} — mcpServers.{_show(name)}.env of {where} holds placeholders (or"
        f" empty values) for them, which the server takes as written; put the keys there{way}."
    )


def _tell_shadowing(data: dict, name: str) -> None:
    """A local-scope entry of the same name for this directory wins over the user scope in Claude Code."""
    projects = data.get("projects")
    here = projects.get(str(Path.cwd())) if isinstance(projects, dict) else None
    local = here.get("mcpServers") if isinstance(here, dict) else None
    if isinstance(local, dict) and name in local:
        print(
            f"Note: this directory also has a local-scope {_show(name)} in that file, which Claude Code prefers here;"
            f" remove it with: claude mcp remove -s local {_show(name)}"
        )


# ---- `mcp-keygate init` ----


def init_config(path: Path | None, force: bool) -> tuple[Path, list[str]]:
    """Write the commented starter config; refuse to replace a file unless `force`. Returns where and the
    variables it references."""
    target = (path or Path("keygate.toml")).expanduser()
    if target.is_dir():
        target = target / "keygate.toml"
    try:
        starter = resources.files("mcp_keygate").joinpath(STARTER).read_bytes()
    except OSError as exc:
        raise InstallError(
            f"the starter config is missing from this installation ({exc.strerror or exc}); reinstall mcp-keygate"
        ) from None
    exists = os.path.lexists(target)
    if exists and not force:
        raise InstallError(
            f"{_show(target)} already exists; pass --force to overwrite it, or --path to write elsewhere"
        )
    if exists and not target.is_file():
        raise InstallError(f"{_show(target)} is not a regular file; pass --path with a file name")
    try:
        _nearest_directory(target.absolute())
        target.parent.mkdir(parents=True, exist_ok=True)
        if not exists:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as file:
                file.write(starter)
        else:
            mode = stat.S_IMODE(os.stat(target).st_mode)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(starter)
                os.chmod(tmp_name, mode)
                os.replace(tmp_name, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
                raise
    except FileExistsError:
        raise InstallError(f"{_show(target)} already exists; pass --force to overwrite it") from None
    except PermissionError as exc:
        raise InstallError(
            f"cannot write {_show(target)} (permission denied on {_show(exc.filename or target)});"
            " pass --path elsewhere"
        ) from None
    except OSError as exc:
        raise InstallError(f"cannot write {_show(target)} ({exc.strerror or exc}); pass --path elsewhere") from None
    return target.absolute(), referenced_variables(target)
