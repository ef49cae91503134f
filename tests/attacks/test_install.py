"""`mcp-keygate install` against hostile or unlucky client configs, run as a user would (a subprocess).

Every refusal must be one `mcp-keygate: …` line on stderr, a non-zero exit, and the client's file (and its
directory) exactly as before: no traceback, no backup, no temporary file, no partial write. What it prints
must never show another server's secrets; what it writes must keep them, value for value.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_keygate import install as install_module
from tests.conftest import REPO

OTHER_SECRET = "ghp_OtherServersSecret0123456789"
HEADER_SECRET = "Bearer hdr-secret-abcdef0123456789"
ARG_SECRET = "sk-arg-secret-9876543210abcdef"
OUR_OLD_SECRET = "sk-users-own-keygate-env-000111"


@pytest.fixture(autouse=True)
def keygate_config(tmp_path: Path) -> Path:
    config = tmp_path / "keygate.toml"
    config.write_text('[providers.openai]\nkeys = ["${OPENAI_API_KEY}"]\n', encoding="utf-8")
    return config


def run_keygate(
    tmp_path: Path,
    *args: str,
    wrap: tuple[str, ...] = (),
    python: Path | str = sys.executable,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, HOME in the test's directory, none of this shell's keys or uv/Claude hints."""
    hints = ("KEYGATE_", "OPENAI_", "UV_", "CLAUDE_CONFIG_DIR", "XDG_CACHE_HOME")
    full = {k: v for k, v in os.environ.items() if not k.startswith(hints) and k != "UV"}
    full.update(HOME=str(tmp_path), PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [*wrap, str(python), "-m", "mcp_keygate", *args],
        capture_output=True,
        text=True,
        errors="replace",
        env=full,
        cwd=cwd or tmp_path,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def run_install(
    tmp_path: Path,
    target: Path | str,
    *extra: str,
    wrap: tuple[str, ...] = (),
    config: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    config = config or tmp_path / "keygate.toml"
    args = ["install", "cursor", "--path", str(target), "--yes", "--config", str(config), *extra]
    return run_keygate(tmp_path, *args, wrap=wrap, env=env)


def installed_command() -> str:
    """What install writes when run by this test's Python: its installation's script, else this Python."""
    script = Path(sys.executable).absolute().parent / "mcp-keygate"
    if script.is_file():
        return str(script)
    on_path = shutil.which("mcp-keygate")
    return str(Path(on_path).absolute()) if on_path else sys.executable


def snapshot(directory: Path) -> dict[str, bytes | str]:
    """Every entry under `directory`: file bytes, link targets, directories; to prove nothing changed."""
    seen: dict[str, bytes | str] = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(root) / name
            key = str(path.relative_to(directory))
            if path.is_symlink():
                seen[key] = "-> " + os.readlink(path)
            elif path.is_dir():
                seen[key] = f"dir {stat.S_IMODE(path.lstat().st_mode):o}"
            elif path.is_file() and os.access(path, os.R_OK):
                seen[key] = path.read_bytes() + f" mode {stat.S_IMODE(path.stat().st_mode):o}".encode()
            else:
                seen[key] = f"other {stat.S_IMODE(path.lstat().st_mode):o}"
    return seen


def assert_refused(proc: subprocess.CompletedProcess, before: dict, directory: Path, *words: str) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("mcp-keygate: "), line
    for word in words:
        assert word in line, line
    assert snapshot(directory) == before  # byte-identical, no backup, no temporary file
    return line


def unprivileged() -> tuple[str, ...]:
    """A command prefix under which file permissions apply (root ignores them unless it drops the capabilities)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permission bits are not enforced")
    caps = "-dac_override,-dac_read_search,-fowner"
    prefix = (setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--")
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("setpriv cannot drop capabilities here")
    return prefix


def client_config() -> dict:
    return {
        "theme": "dark",
        "mcpServers": {
            "github": {
                "command": "npx",
                "args": ["-y", "@modelcontextprotocol/server-github", "--api-key", ARG_SECRET],
                "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": OTHER_SECRET},
            },
            "remote": {
                "url": "https://user:pw-secret-42@mcp.example/sse?token=qs-secret-77",
                "headers": {"Authorization": HEADER_SECRET},
            },
            "keygate": {"command": "old-python", "env": {"OPENAI_API_KEY": OUR_OLD_SECRET}},
        },
        "zzz": {"nested": [1, 2.5, True, None, "é"]},
    }


def test_install_never_prints_another_servers_env_secret(tmp_path):
    target = tmp_path / "mcp.json"
    original = client_config()
    target.write_text(json.dumps(original, indent=2), encoding="utf-8")
    proc = run_install(tmp_path, target)
    assert proc.returncode == 0, proc.stderr
    shown = proc.stdout + proc.stderr
    for secret in (
        OTHER_SECRET,
        HEADER_SECRET,
        "hdr-secret",
        ARG_SECRET,
        OUR_OLD_SECRET,
        "pw-secret-42",
        "qs-secret-77",
    ):
        assert secret not in shown, secret
    assert "github" not in shown and "remote" not in shown  # only our entry is shown at all
    assert "…(redacted)" in shown and '"keygate": {' in shown
    written = json.loads(target.read_text(encoding="utf-8"))
    # everyone else's values exactly as they were, in their order; ours replaced but the user's env kept
    assert list(written) == list(original) and list(written["mcpServers"]) == list(original["mcpServers"])
    assert written["mcpServers"]["github"] == original["mcpServers"]["github"]
    assert written["mcpServers"]["remote"] == original["mcpServers"]["remote"]
    assert written["zzz"] == original["zzz"] and written["theme"] == "dark"
    assert written["mcpServers"]["keygate"]["env"] == {"OPENAI_API_KEY": OUR_OLD_SECRET}
    assert written["mcpServers"]["keygate"]["command"] == installed_command()
    assert OTHER_SECRET in target.read_text(encoding="utf-8")


def test_install_never_prints_secret_shaped_values_in_our_own_old_entry(tmp_path):
    target = tmp_path / "mcp.json"
    old = {
        "command": "python",
        "args": ["--token=tok-secret-1", "--password", "pw-secret-2", "API_KEY=env-secret-3", "AbCdEf0123456789XyZ42"],
        "headers": {"X-Api-Key": "hdr-secret-4"},
        "url": "https://u:url-secret-5@x.example/mcp",
        "cwd": "https://hooks.example/services/T000/B000/WebhookSecret0123456789",
    }
    target.write_text(json.dumps({"mcpServers": {"keygate": old}}), encoding="utf-8")
    proc = run_install(tmp_path, target)
    assert proc.returncode == 0, proc.stderr
    for secret in (
        "tok-secret-1",
        "pw-secret-2",
        "env-secret-3",
        "AbCdEf0123456789XyZ42",
        "hdr-secret-4",
        "url-secret-5",
    ):
        assert secret not in proc.stdout + proc.stderr, secret
    entry = json.loads(target.read_text(encoding="utf-8"))["mcpServers"]["keygate"]
    assert "url" not in entry and "headers" not in entry  # a stdio entry keeps no remote transport


def test_install_never_prints_terminal_escapes_from_the_file(tmp_path):
    target = tmp_path / "mcp.json"
    hostile = {"command": "x\u001b]0;pwned\u0007\u009b2J\u202eevil", "cwd": "line\u2028break"}
    target.write_text(json.dumps({"mcpServers": {"keygate": hostile}}, ensure_ascii=False), encoding="utf-8")
    proc = run_install(tmp_path, target)
    assert proc.returncode == 0, proc.stderr
    for raw in ("\x1b", "\x07", "\x9b", "\u202e", "\u2028"):
        assert raw not in proc.stdout + proc.stderr, repr(raw)
    assert json.loads(target.read_text(encoding="utf-8"))["mcpServers"]["keygate"]["cwd"] == "line\u2028break"


def test_install_on_a_directory_target_is_one_line_and_touches_nothing(tmp_path):
    target = tmp_path / "mcp.json"
    target.mkdir()
    (target / "inside.json").write_text("{}", encoding="utf-8")
    before = snapshot(tmp_path)
    assert_refused(run_install(tmp_path, target), before, tmp_path, "is a directory", str(target))


def test_install_on_a_non_utf8_file_is_one_line_and_touches_nothing(tmp_path):
    target = tmp_path / "mcp.json"
    target.write_bytes(b'{"mcpServers": {"x": {"command": "caf\xe9"}}}')
    before = snapshot(tmp_path)
    assert_refused(run_install(tmp_path, target), before, tmp_path, "not UTF-8", str(target))


def test_install_through_a_dangling_symlink_is_one_line_and_creates_nothing(tmp_path):
    target = tmp_path / "mcp.json"
    target.symlink_to(tmp_path / "dotfiles" / "cursor-mcp.json")
    before = snapshot(tmp_path)
    assert_refused(run_install(tmp_path, target), before, tmp_path, "symlink", "does not exist", str(target))
    assert target.is_symlink()


def test_install_through_a_symlink_loop_is_one_line_and_touches_nothing(tmp_path):
    (tmp_path / "a.json").symlink_to(tmp_path / "b.json")
    (tmp_path / "b.json").symlink_to(tmp_path / "a.json")
    before = snapshot(tmp_path)
    assert_refused(run_install(tmp_path, tmp_path / "a.json"), before, tmp_path, "symlink")


def test_install_on_absurdly_nested_json_is_one_line_and_touches_nothing(tmp_path):
    target = tmp_path / "mcp.json"
    target.write_text("[" * 100_000, encoding="utf-8")
    before = snapshot(tmp_path)
    assert_refused(run_install(tmp_path, target), before, tmp_path, "nested too deeply", str(target))


def test_install_on_an_entry_nested_just_parseably_deep_is_handled(tmp_path):
    target = tmp_path / "mcp.json"
    deep = '{"mcpServers": {"keygate": {"command": "x", "deep": ' + "[" * 900 + "]" * 900 + "}}}"
    target.write_text(deep, encoding="utf-8")
    before = snapshot(tmp_path)
    proc = run_install(tmp_path, target)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    if proc.returncode != 0:  # refusing is fine; crashing or half-writing is not
        assert_refused(proc, before, tmp_path)
    else:
        assert json.loads(target.read_text(encoding="utf-8"))["mcpServers"]["keygate"]["command"] == installed_command()


def test_install_on_an_unreadable_file_is_one_line_and_touches_nothing(tmp_path):
    wrap = unprivileged()
    target = tmp_path / "mcp.json"
    target.write_text('{"mcpServers": {}}', encoding="utf-8")
    target.chmod(0o000)
    before = snapshot(tmp_path)
    try:
        assert_refused(run_install(tmp_path, target, wrap=wrap), before, tmp_path, "permission denied", str(target))
    finally:
        target.chmod(0o600)


def test_install_on_a_read_only_file_is_one_line_and_touches_nothing(tmp_path):
    wrap = unprivileged()
    target = tmp_path / "mcp.json"
    target.write_text('{"mcpServers": {}}', encoding="utf-8")
    target.chmod(0o444)
    before = snapshot(tmp_path)
    try:
        assert_refused(run_install(tmp_path, target, wrap=wrap), before, tmp_path, "read-only", str(target))
    finally:
        target.chmod(0o600)


def test_install_in_a_read_only_directory_is_one_line_and_touches_nothing(tmp_path):
    wrap = unprivileged()
    directory = tmp_path / "cursor"
    directory.mkdir()
    target = directory / "mcp.json"
    target.write_text('{"mcpServers": {}}', encoding="utf-8")
    directory.chmod(0o555)
    before = snapshot(tmp_path)
    try:
        assert_refused(run_install(tmp_path, target, wrap=wrap), before, tmp_path, "permission denied", str(directory))
    finally:
        directory.chmod(0o755)


def test_install_under_a_parent_that_is_a_file_is_one_line_and_touches_nothing(tmp_path):
    (tmp_path / ".cursor").write_text("not a directory", encoding="utf-8")
    before = snapshot(tmp_path)
    target = tmp_path / ".cursor" / "mcp.json"
    assert_refused(
        run_install(tmp_path, target), before, tmp_path, "is a file, not a directory", str(tmp_path / ".cursor")
    )


@pytest.mark.parametrize("entry", ["oops", ["-m", "x"], None, 3])
def test_install_over_a_non_object_entry_for_our_name_is_one_line_and_touches_nothing(tmp_path, entry):
    target = tmp_path / "mcp.json"
    target.write_text(
        json.dumps({"mcpServers": {"keygate": entry, "other": {"env": {"K": OTHER_SECRET}}}}), encoding="utf-8"
    )
    before = snapshot(tmp_path)
    line = assert_refused(
        run_install(tmp_path, target), before, tmp_path, "mcpServers.keygate", "not an object", "--name"
    )
    assert OTHER_SECRET not in line


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"mcpServers": []}', ["mcpServers is not an object"]),
        ("[1, 2]", ["does not hold a JSON object"]),
        ('{"mcpServers": {}, // a comment\n}', ["not valid JSON", "comments"]),
        ('{"a": NaN}', ["not valid JSON"]),
        ('{"a": 1e400}', ["out of range"]),
        ('{"mcpServers": {"a": {}}, "mcpServers": {"b": {}}}', ["twice", "mcpServers"]),
    ],
)
def test_install_on_json_it_cannot_rewrite_faithfully_is_one_line_and_touches_nothing(tmp_path, text, words):
    target = tmp_path / "mcp.json"
    target.write_text(text, encoding="utf-8")
    before = snapshot(tmp_path)
    assert_refused(run_install(tmp_path, target), before, tmp_path, str(target), *words)


def test_install_on_a_fifo_is_one_line_and_does_not_hang(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    target = tmp_path / "mcp.json"
    os.mkfifo(target)
    before = snapshot(tmp_path)
    assert_refused(run_install(tmp_path, target), before, tmp_path, "not a regular file")


def test_install_with_a_newline_in_the_path_still_fails_in_one_line(tmp_path):
    target = tmp_path / "evil\nmcp-keygate: fake second line"
    target.mkdir()
    before = snapshot(tmp_path)
    line = assert_refused(run_install(tmp_path, target), before, tmp_path, "is a directory", "\\n")
    assert "\n" not in line


def test_install_through_a_symlink_writes_the_real_file_and_keeps_the_link(tmp_path):
    real_dir = tmp_path / "dotfiles"
    real_dir.mkdir()
    real = real_dir / "mcp.json"
    real.write_text(json.dumps({"mcpServers": {"other": {"command": "x"}}}), encoding="utf-8")
    link = tmp_path / "mcp.json"
    link.symlink_to(real)
    proc = run_install(tmp_path, link)
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert set(json.loads(real.read_text(encoding="utf-8"))["mcpServers"]) == {"other", "keygate"}
    assert len(list(real_dir.glob("mcp.json.bak-*"))) == 1  # the backup sits next to the real file
    assert not list(tmp_path.glob("mcp.json.bak-*")) and not list(tmp_path.glob(".mcp.json.*"))


def test_install_keeps_the_files_permission_bits(tmp_path):
    target = tmp_path / "mcp.json"
    target.write_text(json.dumps({"mcpServers": {"other": {"env": {"K": OTHER_SECRET}}}}), encoding="utf-8")
    target.chmod(0o640)
    proc = run_install(tmp_path, target)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    (backup,) = tmp_path.glob("mcp.json.bak-*")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o640 and OTHER_SECRET in backup.read_text(encoding="utf-8")


def test_install_creates_a_new_config_private_to_its_owner(tmp_path):
    target = tmp_path / ".cursor" / "mcp.json"
    old_umask = os.umask(0o022)
    try:
        proc = run_install(tmp_path, target)
    finally:
        os.umask(old_umask)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "keygate" in json.loads(target.read_text(encoding="utf-8"))["mcpServers"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["mcp.json"]  # no backup of nothing, no temp file


def test_install_twice_in_one_second_keeps_the_first_backup(tmp_path):
    target = tmp_path / "mcp.json"
    original = json.dumps({"mcpServers": {"other": {"command": "x"}}}).encode()
    target.write_bytes(original)
    assert run_install(tmp_path, target, "--name", "first").returncode == 0
    assert run_install(tmp_path, target, "--name", "second").returncode == 0
    backups = sorted(tmp_path.glob("mcp.json.bak-*"))
    assert len(backups) == 2 and original in [b.read_bytes() for b in backups]


def test_install_keeps_a_windows_files_bom_line_endings_and_indent(tmp_path):
    target = tmp_path / "mcp.json"
    text = json.dumps({"mcpServers": {"other": {"command": "C:\\Program Files\\x.exe", "args": ["é"]}}}, indent=4)
    target.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    proc = run_install(tmp_path, target)
    assert proc.returncode == 0, proc.stderr
    raw = target.read_bytes()
    assert raw.startswith(b'\xef\xbb\xbf{\r\n    "mcpServers"') and b"\n" not in raw.replace(b"\r\n", b"")
    assert "é" in raw.decode("utf-8-sig")  # not rewritten as \u00e9
    data = json.loads(raw.decode("utf-8-sig"))
    assert data["mcpServers"]["other"] == {"command": "C:\\Program Files\\x.exe", "args": ["é"]}


def test_install_unchanged_entry_leaves_an_oddly_formatted_file_alone(tmp_path):
    target = tmp_path / "mcp.json"
    assert run_install(tmp_path, target).returncode == 0
    entry = json.loads(target.read_text(encoding="utf-8"))["mcpServers"]["keygate"]
    minified = json.dumps({"mcpServers": {"keygate": entry}}, separators=(",", ":")).encode()
    target.write_bytes(minified)
    before = snapshot(tmp_path)
    proc = run_install(tmp_path, target)
    assert proc.returncode == 0 and "nothing to do" in proc.stdout
    assert snapshot(tmp_path) == before


def test_install_with_a_config_that_is_a_directory_is_one_line(tmp_path):
    target = tmp_path / "mcp.json"
    target.write_text("{}", encoding="utf-8")
    config_dir = tmp_path / "keygate.d"
    config_dir.mkdir()
    before = snapshot(tmp_path)
    assert_refused(run_install(tmp_path, target, config=config_dir), before, tmp_path, "--config", "is a directory")


def test_a_failed_rename_leaves_no_temporary_file_and_no_backup(tmp_path, monkeypatch):
    target = tmp_path / "mcp.json"
    target.write_text(json.dumps({"mcpServers": {"other": {"env": {"K": OTHER_SECRET}}}}), encoding="utf-8")
    before = snapshot(tmp_path)

    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(install_module.os, "replace", refuse)
    with pytest.raises(install_module.InstallError, match="No space left on device"):
        install_module.install("cursor", None, "keygate", target, True, lambda: True)
    assert snapshot(tmp_path) == before


# ---- "The first hour": a command that lasts, an env block to fill in, Claude Code's user scope ----


def make_env(directory: Path, script: bool) -> Path:
    """A real (empty) virtual environment at `directory`, optionally with an `mcp-keygate` script; its Python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True, timeout=120)
    python = directory / "bin" / "python"
    if script:
        stub = directory / "bin" / "mcp-keygate"
        stub.write_text(f"#!{python}\nfrom mcp_keygate.cli import main\nraise SystemExit(main())\n", encoding="utf-8")
        stub.chmod(0o755)
    return python


def test_install_writes_the_installations_script_by_absolute_path(tmp_path):
    python = make_env(tmp_path / "tools" / "kg", script=True)
    target = tmp_path / "mcp.json"
    config = tmp_path / "keygate.toml"
    proc = run_keygate(
        tmp_path, "install", "cursor", "--path", str(target), "--yes", "--config", str(config), python=python
    )
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(target.read_text(encoding="utf-8"))["mcpServers"]["keygate"]
    script = tmp_path / "tools" / "kg" / "bin" / "mcp-keygate"
    assert entry["command"] == str(script)  # absolute, and not the Python (a venv's python is a link to another)
    assert entry["args"] == ["serve", "--config", str(config.resolve())]
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("Command: ")]
    assert str(script) in line and "this installation's script" in line and "absolute path" in line


def test_install_without_a_script_falls_back_to_this_python(tmp_path):
    python = make_env(tmp_path / "bare", script=False)
    target = tmp_path / "mcp.json"
    proc = run_keygate(
        tmp_path, "install", "cursor", "--path", str(target), "--yes", python=python, env={"PATH": os.defpath}
    )
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(target.read_text(encoding="utf-8"))["mcpServers"]["keygate"]
    assert entry["command"] == str(python) and entry["args"] == ["-m", "mcp_keygate", "serve"]
    assert "no mcp-keygate script" in proc.stdout


@pytest.mark.parametrize(
    ("where", "uv_hint"),
    [
        (".cache/uv/archive-v0/Kk1vAEla1yVuTEmW", False),  # uvx mcp-keygate: uv's cache under HOME
        ("scratch/.tmpRpdMmC/archive-v0/pBn5jqbnsHmIWKO", False),  # uvx --no-cache: a temporary cache
        ("elsewhere/archive-v0/AbC123", True),  # UV_CACHE_DIR somewhere odd: uv says it ran us ($UV)
    ],
)
def test_install_from_uvx_writes_uvx_not_the_throwaway_environment(tmp_path, where, uv_hint):
    python = make_env(tmp_path / where, script=True)  # uvx's environment has the script too: it must not be used
    target = tmp_path / "claude_desktop_config.json"
    config = tmp_path / "keygate.toml"
    env = {"PATH": os.defpath}
    if uv_hint:
        uv_dir = tmp_path / "uvbin"
        uv_dir.mkdir()
        for name in ("uv", "uvx"):
            (uv_dir / name).write_text("#!/bin/sh\n", encoding="utf-8")
            (uv_dir / name).chmod(0o755)
        env["UV"] = str(uv_dir / "uv")
    args = ["install", "claude-desktop", "--path", str(target), "--yes", "--config", str(config)]
    proc = run_keygate(tmp_path, *args, python=python, env=env)
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(target.read_text(encoding="utf-8"))["mcpServers"]["keygate"]
    # uvx beside the uv that ran us, by absolute path; else the bare name (and the line says it was not found)
    assert entry["command"] == (str(tmp_path / "uvbin" / "uvx") if uv_hint else "uvx")
    assert entry["args"] == ["mcp-keygate", "serve", "--config", str(config.resolve())]
    assert str(tmp_path / where) not in target.read_text(encoding="utf-8")
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("Command: ")]
    assert "uv" in line and "clears" in line and "uvx" in line


def test_install_lists_every_referenced_variable_as_a_placeholder_and_keeps_the_users_values(tmp_path):
    config = tmp_path / "keygate.toml"
    config.write_text(
        "# a comment naming ${NOT_REFERENCED} does not count\n"
        "[providers.a]\n"
        'type = "openai"\n'
        'base_url = "${MY_BASE_URL}"\n'
        'keys = ["${OPENAI_KEY_A}", "${OPENAI_KEY_B}", "${OPENAI_KEY_A}"]\n'
        "[server]\n"
        'auth_tokens = { alice = "${KEYGATE_TOKEN_ALICE}" }\n',
        encoding="utf-8",
    )
    target = tmp_path / "mcp.json"
    users = {"OPENAI_KEY_B": "users-own-value-b", "EXTRA": "kept too"}
    target.write_text(json.dumps({"mcpServers": {"keygate": {"command": "old", "env": users}}}), encoding="utf-8")
    shell = {"OPENAI_KEY_A": "sk-from-the-shell-0123456789", "OPENAI_KEY_B": "sk-shell-b-0123456789"}

    proc = run_install(tmp_path, target, env=shell)  # no --env-from-shell: placeholders, never the shell's values
    assert proc.returncode == 0, proc.stderr
    env = json.loads(target.read_text(encoding="utf-8"))["mcpServers"]["keygate"]["env"]
    assert env == {
        "OPENAI_KEY_B": "users-own-value-b",
        "EXTRA": "kept too",
        "MY_BASE_URL": "<set MY_BASE_URL>",
        "OPENAI_KEY_A": "<set OPENAI_KEY_A>",
        "KEYGATE_TOKEN_ALICE": "<set KEYGATE_TOKEN_ALICE>",
    }
    assert "sk-from-the-shell" not in target.read_text(encoding="utf-8")
    assert '"OPENAI_KEY_A": "<set OPENAI_KEY_A>"' in proc.stdout  # a placeholder is shown; the user's value is not
    assert "users-own-value-b" not in proc.stdout + proc.stderr
    (todo,) = [line for line in proc.stdout.splitlines() if line.startswith("Still to fill in: ")]
    assert "MY_BASE_URL, OPENAI_KEY_A, KEYGATE_TOKEN_ALICE" in todo and "OPENAI_KEY_B" not in todo
    assert "--env-from-shell" in todo

    proc = run_install(tmp_path, target, "--env-from-shell", env=shell)
    assert proc.returncode == 0, proc.stderr
    env = json.loads(target.read_text(encoding="utf-8"))["mcpServers"]["keygate"]["env"]
    assert env["OPENAI_KEY_A"] == "sk-from-the-shell-0123456789"  # a placeholder gives way to the shell's value
    assert env["OPENAI_KEY_B"] == "users-own-value-b"  # what the user wrote stays
    assert env["MY_BASE_URL"] == "<set MY_BASE_URL>"  # not set in the shell: still a placeholder
    assert "sk-from-the-shell" not in proc.stdout + proc.stderr and "…(redacted)" in proc.stdout
    (todo,) = [line for line in proc.stdout.splitlines() if line.startswith("Still to fill in: ")]
    assert "MY_BASE_URL, KEYGATE_TOKEN_ALICE" in todo and "OPENAI_KEY_A" not in todo


def test_install_print_is_json_with_placeholders_and_says_how_it_starts_on_stderr(tmp_path):
    config = tmp_path / "keygate.toml"
    proc = run_keygate(
        tmp_path,
        "install",
        "claude-desktop",
        "--config",
        str(config),
        "--print",
        env={"OPENAI_API_KEY": "sk-never-0123456789"},
    )
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(proc.stdout)["mcpServers"]["keygate"]
    assert entry["env"] == {"OPENAI_API_KEY": "<set OPENAI_API_KEY>"} and entry["command"] == installed_command()
    assert proc.stderr.startswith("Command: ") and "sk-never" not in proc.stdout + proc.stderr
    refused = run_keygate(tmp_path, "install", "cursor", "--config", str(config), "--print", "--env-from-shell")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("mcp-keygate: --env-from-shell with --print")


def test_claude_code_defaults_to_the_user_scope_in_claude_json(tmp_path):
    project = tmp_path / "work" / "repo"
    project.mkdir(parents=True)
    config = tmp_path / "keygate.toml"
    home_file = tmp_path / ".claude.json"
    state = {
        "numStartups": 7,
        "theme": "Café",
        "projects": {str(project.resolve()): {"mcpServers": {"keygate": {"command": "old"}}, "allowedTools": []}},
        "mcpServers": {"github": {"type": "stdio", "command": "npx", "env": {"TOKEN": OTHER_SECRET}}},
    }
    home_file.write_text(json.dumps(state, indent=2, ensure_ascii=False), encoding="utf-8")
    proc = run_keygate(tmp_path, "install", "claude-code", "--config", str(config), "--yes", cwd=project)
    assert proc.returncode == 0, proc.stderr
    written = json.loads(home_file.read_text(encoding="utf-8"))
    entry = written["mcpServers"]["keygate"]  # top level: every project (what `claude mcp add -s user` writes)
    assert entry["type"] == "stdio" and entry["command"] == installed_command()
    assert entry["args"] == ["serve", "--config", str(config.resolve())]
    assert entry["env"] == {"OPENAI_API_KEY": "<set OPENAI_API_KEY>"}
    assert written["projects"] == state["projects"] and written["numStartups"] == 7 and written["theme"] == "Café"
    assert written["mcpServers"]["github"] == state["mcpServers"]["github"]
    assert not (project / ".mcp.json").exists()
    assert OTHER_SECRET not in proc.stdout + proc.stderr
    assert "local-scope keygate" in proc.stdout  # the local entry for this directory wins there: say so

    proc = run_keygate(
        tmp_path, "install", "claude-code", "--scope", "project", "--config", str(config), "--yes", cwd=project
    )
    assert proc.returncode == 0, proc.stderr
    assert "keygate" in json.loads((project / ".mcp.json").read_text(encoding="utf-8"))["mcpServers"]


def test_claude_code_user_scope_follows_claude_config_dir(tmp_path):
    config_dir = tmp_path / "alt-claude"
    proc = run_keygate(tmp_path, "install", "claude-code", "--yes", env={"CLAUDE_CONFIG_DIR": str(config_dir)})
    assert proc.returncode == 0, proc.stderr
    assert "keygate" in json.loads((config_dir / ".claude.json").read_text(encoding="utf-8"))["mcpServers"]
    assert not (tmp_path / ".claude.json").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["claude-code", "--scope", "project", "--env-from-shell"], ["--env-from-shell", ".mcp.json", "repository"]),
        (["cursor", "--scope", "user"], ["--scope is for claude-code only"]),
        (["cursor", "--config", "missing.toml"], ["missing.toml", "file not found", "mcp-keygate init"]),
        (["cursor", "--config", "bad.toml"], ["bad.toml", "not valid TOML"]),
    ],
)
def test_install_refusals_are_one_line_and_touch_nothing(tmp_path, args, words):
    (tmp_path / "bad.toml").write_text("[providers\n", encoding="utf-8")
    before = snapshot(tmp_path)
    assert_refused(run_keygate(tmp_path, "install", *args, "--yes"), before, tmp_path, *words)


def test_install_keeps_non_ascii_text_and_a_four_space_indent_and_shows_only_its_entry(tmp_path):
    target = tmp_path / "mcp.json"
    original = {
        "theme": "Café",
        "mcpServers": {"other": {"command": "/opt/naïve/bin/srv", "args": ["--lang", "français", "日本語"]}},
        "recent": ["Crème brûlée", "Ελληνικά"],
    }
    target.write_text(json.dumps(original, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
    proc = run_install(tmp_path, target)
    assert proc.returncode == 0, proc.stderr
    text = target.read_text(encoding="utf-8")
    expected = json.loads(text)
    assert list(expected["mcpServers"]) == ["other", "keygate"]
    expected_text = json.dumps(expected, indent=4, ensure_ascii=False) + "\n"
    assert text == expected_text and "Café" in text and "\\u" not in text  # the same layout, text as written
    assert {k: v for k, v in expected.items() if k != "mcpServers"} == {
        k: v for k, v in original.items() if k != "mcpServers"
    }
    diff = [line for line in proc.stdout.splitlines() if line[:1] in "+-" and not line.startswith(("---", "+++"))]
    assert diff and all(line.startswith("+") for line in diff)
    assert not any("Café" in line or "other" in line or "français" in line for line in proc.stdout.splitlines())


def test_install_over_an_env_that_is_not_an_object_is_one_line_and_touches_nothing(tmp_path):
    target = tmp_path / "mcp.json"
    target.write_text(json.dumps({"mcpServers": {"keygate": {"command": "x", "env": "OPENAI_API_KEY=sk-x"}}}))
    before = snapshot(tmp_path)
    line = assert_refused(run_install(tmp_path, target), before, tmp_path, "mcpServers.keygate.env is not an object")
    assert "sk-x" not in line
