"""`mcp-keygate install claude-desktop | claude-code | cursor`: register the server in a client's config.

It merges one entry into the client's `mcpServers`, shows that entry's change first (values that may be
secrets shown redacted), keeps a backup, and never writes a secret: the entry points at a config file whose
keys are environment references. The rest of the file is carried over value for value, in its key order.

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
import stat
import sys
import tempfile
import time
from pathlib import Path

CLIENTS = ("claude-desktop", "claude-code", "cursor")

REDACTED = "…(redacted)"
_SECRET_MAPS = {"env", "environment", "headers", "requestinit"}  # every value under these is hidden
_SECRET_NAME = re.compile(r"key|token|secret|passw|pwd|auth|credential|cookie|bearer|session|private|signature", re.I)
_TOKEN_PREFIX = re.compile(r"^(sk|pk|rk|ghp|gho|ghu|ghs|ghr|github_pat|glpat|xox[abprs]|AKIA|ASIA|AIza|hf)[-_]?\w{6,}")
_REMOTE_KEYS = ("url", "serverUrl", "headers", "requestInit")  # a stdio entry has no use for these
_DISPLAY_DEPTH = 32
_MISSING = object()


class InstallError(Exception):
    pass


def default_path(client: str) -> Path:
    """Where each client keeps its MCP servers on this platform."""
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
        return Path.cwd() / ".mcp.json"  # the project scope, shared with the repository
    if client == "cursor":
        return home / ".cursor" / "mcp.json"
    raise InstallError(f"unknown client {client!r}; expected one of {', '.join(CLIENTS)}")


def server_entry(config: Path | None) -> dict:
    """How the client should start the server: this Python, this package, an absolute config path."""
    args = ["-m", "mcp_keygate", "serve"]
    if config is not None:
        args += ["--config", str(config.expanduser().resolve())]
    return {"command": sys.executable, "args": args}


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
            if str(key).lower() in _SECRET_MAPS:
                out[key] = {k: REDACTED for k in item} if isinstance(item, dict) else REDACTED
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


def install(client: str, config: Path | None, name: str, path: Path | None, write: bool, confirm) -> int:
    """Show the change to our entry; write it (with a backup) when `write`, or when `confirm()` says yes."""
    if config is not None:
        config = config.expanduser()
        if config.is_dir():
            raise InstallError(f"--config {_show(config)} is a directory; pass the keygate TOML file")
        if not config.exists():
            raise InstallError(f"--config {_show(config)}: file not found")
    target = path.expanduser() if path is not None else default_path(client)
    real = _real_path(target)
    original = _read(real)
    text, layout = _decode(original, real) if original is not None else ("", _Layout("", False))
    data = _parse(text, real)
    servers = data.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise InstallError(f"{_show(real)}: mcpServers is not an object; fix it or pass --path to write elsewhere")
    before = servers.get(name, _MISSING)
    after = _merged_entry(before, name, server_entry(config), real)
    try:
        unchanged = before == after
    except RecursionError:
        raise InstallError(f"{_show(real)}: mcpServers.{_show(name)} is nested too deeply; fix it first") from None
    if unchanged:
        print(f"{_show(target)} already has this entry; nothing to do.")
        return 0
    servers[name] = after  # in place: the entry keeps its position, everything else its order and values
    new = _serialise(data, layout, real)
    _check_writable(real, original is not None)

    where = _show(target) if real == target else f"{_show(target)} -> {_show(real)}"
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
    return 0
