"""`mcp-keygate serve | status | check | simulator | install | demo`.

Heavy modules are imported inside each command, so `serve` over stdio starts fast and
`check`/`status` never load the MCP SDK.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any


def _setup_logging(level: str, log_format: str = "text") -> None:
    from .logs import setup_logging

    setup_logging(level, log_format)


NOTHING_TO_SERVE = (
    "nothing to serve: no providers are configured. Either export a key (OPENAI_API_KEY, ANTHROPIC_API_KEY, "
    "GEMINI_API_KEY, …) for zero-config, or write a config (start from keygate.example.toml) and pass --config"
)


WAITING_ON_A_TERMINAL = (
    "mcp-keygate is waiting for an MCP client on stdin — Claude Desktop, Claude Code or Cursor start it this "
    "way. To see it work: mcp-keygate demo. To register it: mcp-keygate install claude-desktop --config "
    "<file>. Ctrl-C stops it."
)


def _fail(message: str, code: int = 1) -> int:
    print(f"mcp-keygate: {message}", file=sys.stderr)
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level, args.log_format)
    from .config import load_config
    from .errors import KeygateError
    from .gateway import Keygate

    try:
        config = load_config(args.config)
        gateway = Keygate(config)
    except KeygateError as exc:
        return _fail(str(exc))
    from .logs import SCRUBBER

    SCRUBBER.add_secrets(gateway.secrets)
    from . import tracing

    try:
        tracing.configure(config.tracing, "mcp-keygate")
    except KeygateError as exc:
        return _fail(str(exc))
    tracing.remember_secrets(gateway.secrets)
    reloader = _reloader(args, config, gateway)
    if not config.providers:
        logging.getLogger("mcp_keygate").warning(
            "no providers configured: set OPENAI_API_KEY (or ANTHROPIC_API_KEY, GEMINI_API_KEY, …) or pass "
            "--config; tools will answer with an error until then"
        )
    if args.transport == "stdio":
        import anyio

        from .server import build_server

        if sys.stdin.isatty():
            print(WAITING_ON_A_TERMINAL, file=sys.stderr)
        server = build_server(gateway, log_level=args.log_level, reloader=reloader)
        _freeze_startup_objects()
        try:
            anyio.run(server.run_stdio_async, backend_options=_event_loop_options())
        except KeyboardInterrupt:
            pass
        except BaseExceptionGroup as group:  # the SDK's task groups wrap a store that failed to open
            found = _keygate_error(group)
            if found is None:
                raise
            return _fail(str(found))
        except KeygateError as exc:
            return _fail(str(exc))
        return 0
    return _serve_http(args, config, gateway, reloader)


def _reloader(args: argparse.Namespace, config, gateway):
    """SIGHUP (and `mcp-keygate reload`) always; watching the file by default over stdio only."""
    from pathlib import Path

    from .pidfiles import PidFile
    from .reload import Reloader

    chosen = args.config or os.environ.get("KEYGATE_CONFIG")
    path = Path(chosen) if chosen else None
    watch = args.watch if args.watch is not None else args.transport == "stdio"
    return Reloader(gateway, path, watch=watch, pid_file=PidFile.for_config(config, path))


def cmd_reload(args: argparse.Namespace) -> int:
    """Check the config, send SIGHUP to the servers running it (or to --pid), say what each did."""
    import signal
    import time
    from pathlib import Path

    from .config import ConfigError, load_config
    from .errors import KeygateError
    from .pidfiles import PidFile
    from .reload import reload_problems

    if not hasattr(signal, "SIGHUP"):
        return _fail("reload needs SIGHUP, which this platform does not have: restart the server instead")
    try:
        config = load_config(args.config)
        config.resolve_keys()
        if problems := reload_problems(config, None):
            raise ConfigError(problems)
        _check_policy_tokens(config)
    except KeygateError as exc:
        return _fail(f"not reloading, the config has problems (the servers keep theirs): {exc}")
    chosen = args.config or os.environ.get("KEYGATE_CONFIG")
    pid_file = PidFile.for_config(config, Path(chosen) if chosen else None)
    pids = [args.pid] if args.pid else pid_file.running()
    if not pids:
        return _fail("no running server of this config found (start one, or pass --pid)")
    sent = time.time()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            return _fail(f"no process {pid}")
        except PermissionError:
            return _fail(f"not allowed to signal process {pid} (another user's?)")
    return _reload_outcomes(pid_file, pids, sent)


def _reload_outcomes(pid_file, pids: list[int], sent: float, wait_s: float = 10.0) -> int:
    """Print what each server said of the reload (exit 1 if one refused it)."""
    import time

    deadline, refused = time.monotonic() + wait_s, False
    told: dict[int, tuple[bool, str]] = {}
    while len(told) < len(pids) and time.monotonic() < deadline:
        for pid in pids:
            if pid not in told and (outcome := pid_file.outcome_since(pid, sent)) is not None:
                told[pid] = outcome
        time.sleep(0.1)
    for pid in pids:
        ok, message = told.get(pid, (True, "asked to reload; no answer yet — its log says what happened"))
        refused = refused or not ok
        print(f"server {pid}: {message}", file=sys.stdout if ok else sys.stderr)
    return 1 if refused else 0


def _keygate_error(group: BaseExceptionGroup) -> BaseException | None:
    """The first of our own errors inside an exception group (anyio nests them)."""
    from .errors import KeygateError

    for exc in group.exceptions:
        if isinstance(exc, KeygateError):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (inner := _keygate_error(exc)) is not None:
            return inner
    return None


def _event_loop_options() -> dict[str, bool]:
    """uvloop's event loop when it is installed (a dependency except on Windows), as uvicorn picks it
    for the HTTP transports: its loop and transports are C, asyncio's mostly Python."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def _freeze_startup_objects() -> None:
    """Move everything built at start-up (modules, schemas, config) out of the garbage collector's
    reach: a full collection then walks only what calls create, instead of pausing every call in
    flight for tens of milliseconds.

    And collect the youngest objects ten times less often: each call leaves ~50 objects in cycles
    (the SDK's request contexts, closures) that only the collector frees, and with Python's default
    threshold (700 allocations) it ran about twice per call under load, each time walking every
    object of every call in flight — ~5 % of the server's CPU, halved by this (bench/RESULTS.md)."""
    import gc

    gc.freeze()  # (no collection first: it would cost ~25 ms of start-up for a little garbage kept)
    gc.set_threshold(7000, 10, 10)


def _serve_http(args: argparse.Namespace, config, gateway, reloader) -> int:
    import anyio

    from .auth import TokenRegistry
    from .config import ConfigError
    from .errors import StoreError
    from .http import UnsafeBind, build_http_app
    from .http_server import PortInUse, run_http
    from .logs import SCRUBBER
    from .metrics import Metrics
    from .server import build_server
    from .wiring import reach_store

    host = config.server.host if args.host is None else args.host
    port = config.server.port if args.port is None else args.port
    try:
        secrets = config.resolve_tokens()
        SCRUBBER.add_secrets(list(secrets.values()))
        tokens = TokenRegistry(secrets)
        if tokens.enabled and (problems := config.policy_token_problems(set(secrets))):
            raise ConfigError(problems)
        if tokens.enabled:
            reloader.token_names = set(secrets)
        metrics = Metrics(gateway.pool)
        server = build_server(
            gateway, log_level=args.log_level, tokens=tokens, owns_gateway=False, metrics=metrics, reloader=reloader
        )
        app = build_http_app(
            gateway,
            server,
            transport=args.transport,
            host=host,
            settings=config.server,
            tokens=tokens,
            metrics=metrics,
            reloader=reloader,
        )
    except (ConfigError, UnsafeBind) as exc:
        return _fail(str(exc), 2)
    try:
        anyio.run(reach_store, config)  # one line now, rather than a traceback from the app's start-up
    except StoreError as exc:
        return _fail(str(exc))
    paths = {"streamable-http": "/mcp", "sse": "/sse", "http": "/mcp and /sse"}[args.transport]
    logging.getLogger("mcp_keygate").info("serving MCP on http://%s:%s %s", host, port, paths)
    _freeze_startup_objects()
    try:
        run_http(app, gateway, host, port, config.server, args.log_level.lower())
    except PortInUse as exc:
        return _fail(str(exc), 2)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import anyio

    from .config import load_config
    from .errors import KeygateError
    from .wiring import reach_store

    try:
        config = load_config(args.config)
        if not config.providers:
            return _fail(NOTHING_TO_SERVE)
        keys = config.resolve_keys()
        if config.state.backend == "redis" and not args.offline:
            anyio.run(reach_store, config, None, 2.0)  # installed, configured and answering
        _check_policy_tokens(config)
        online = _check_online(config) if args.online else []
    except KeygateError as exc:
        return _fail(str(exc))
    if online:
        for problem in online:
            print(f"mcp-keygate: {problem}", file=sys.stderr)
        return 1
    for warning in config.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    total = sum(len(k) for k in keys.values())
    print(f"OK: {len(config.providers)} provider(s), {total} key(s), {len(config.models)} model(s)")
    for name, chain in config.route_names().items():
        print(f"  route {name}: {' -> '.join(chain)}")
    for name, preset in config.presets.items():
        params = ", ".join(
            f"{p}: {spec.type}" + ("" if spec.default is None else f" = {spec.default!r}")
            for p, spec in preset.parameters.items()
        )
        print(f"  preset {name}({params}) -> {preset.route}: tool and prompt")
    for name, policy in config.policies.items():
        budget = policy.budget().describe()
        print(
            f"  policy {name}: tokens {', '.join(policy.tokens)}" + (f"; budget {budget} per token" if budget else "")
        )
    return 0


def _check_online(config: Any) -> list[str]:
    """`check --online`: every configured model exists for every key of its provider."""
    import anyio
    import httpx2

    from .model_lists import missing_models

    async def run() -> list[str]:
        async with httpx2.AsyncClient(timeout=20) as client:
            return await missing_models(config, client)

    return anyio.run(run)


def cmd_models(args: argparse.Namespace) -> int:
    """`mcp-keygate models PROVIDER`: the models each key of a provider can reach (keys shown by id)."""
    import json

    import anyio
    import httpx2

    from .config import load_config
    from .errors import KeygateError
    from .model_lists import ListingUnsupported, list_provider_models

    try:
        config = load_config(args.config)
        if args.provider not in config.providers:
            known = ", ".join(sorted(config.providers)) or "none"
            return _fail(f"no provider {args.provider!r} in the config (providers: {known})")

        async def run() -> Any:
            async with httpx2.AsyncClient(timeout=20) as client:
                return await list_provider_models(config, args.provider, client)

        rows = anyio.run(run)
    except (KeygateError, ListingUnsupported) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps([{"key": r.key_id, "models": r.models, "error": r.error} for r in rows], indent=2))
    else:
        for row in rows:
            print(f"key {row.key_id}: " + (row.error or f"{len(row.models)} model(s)"))
        for model in sorted({m for r in rows for m in r.models}):
            reach = sum(model in r.models for r in rows)
            print(f"  {model}" + ("" if reach == len(rows) else f"  ({reach} of {len(rows)} keys)"))
    return 1 if any(r.error for r in rows) else 0


def _configured_key_ids(config: Any) -> set[str] | None:
    """The key ids of the config in use (the state file may remember other configs' keys); None when
    this shell cannot tell (the keys' variables are not set here), and then every key is shown."""
    from .errors import KeygateError

    try:
        keys = config.resolve_keys()
    except KeygateError:
        return None
    return {k.key_id for ks in keys.values() for k in ks} or None


def _check_policy_tokens(config: Any) -> None:
    """With the bearer tokens known here, every token a policy names must be one of them."""
    from .config import ConfigError

    try:
        tokens = config.resolve_tokens()
    except ConfigError:
        return  # the tokens' variables are not set in this shell (they matter only to HTTP serving)
    if tokens and (problems := config.policy_token_problems(set(tokens))):
        raise ConfigError(problems)


def cmd_status(args: argparse.Namespace) -> int:
    import time

    import anyio

    from .config import load_config, state_path
    from .errors import KeygateError, StoreError
    from .status import key_rows, render_json, render_table
    from .wiring import configured_store

    try:
        config = load_config(args.config)
        if config.state.backend == "memory":
            return _fail("the config uses the memory backend: its state lives only inside the running server")
        if config.state.backend == "sqlite" and not state_path(config).exists():
            path = state_path(config)
            return _fail(f"no state file at {path} yet: start `mcp-keygate serve` once (or set KEYGATE_STATE)")
        store = configured_store(config)
    except KeygateError as exc:
        return _fail(str(exc))

    async def read():
        await store.open()
        try:
            return await store.load_keys()
        finally:
            await store.close()

    shown = None if args.all else _configured_key_ids(config)

    def rows() -> list[Any]:
        records = anyio.run(read)
        return key_rows([r for r in records if shown is None or r.key_id in shown], time.time())

    async def read_usage() -> Any:
        from .usage import usage_result

        since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - (args.days - 1) * 86_400))
        await store.open()
        try:
            return usage_result(await store.load_usage(since), since)
        finally:
            await store.close()

    try:
        if args.usage:
            from .usage import render_usage

            result = anyio.run(read_usage)
            print(result.model_dump_json(indent=2) if args.json else render_usage(result))
            return 0
        if args.watch:
            return _watch(rows, args.watch, args.json)
        print(render_json(rows()) if args.json else render_table(rows()))
    except StoreError as exc:
        return _fail(str(exc))
    except BrokenPipeError:
        raise
    except OSError as exc:
        return _fail(f"cannot read the state store: {exc}")
    return 0


def _watch(rows: Any, every_s: float, as_json: bool) -> int:
    """Refresh until Ctrl-C: a live coloured table in a terminal, one table per refresh when piped."""
    import time

    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from .status import EMPTY, render_json, render_table
    from .status import live_table as table_for

    console = Console(highlight=False, markup=False)

    def live_table() -> Any:
        current = rows()
        if not current:
            return Text(EMPTY)
        title = f"mcp-keygate keys — {time.strftime('%H:%M:%S')}, every {every_s:g} s, Ctrl-C to stop"
        return table_for(current, time.time(), console.width, title)

    try:
        if console.is_terminal and not as_json:
            with Live(live_table(), console=console, auto_refresh=False) as live:
                while True:
                    time.sleep(every_s)
                    live.update(live_table(), refresh=True)
        while True:
            current = rows()
            print(render_json(current) if as_json else f"-- {time.strftime('%H:%M:%S')}\n{render_table(current)}\n")
            sys.stdout.flush()
            time.sleep(every_s)
    except KeyboardInterrupt:
        return 0


def cmd_simulator(args: argparse.Namespace) -> int:
    from .simulator.runner import serve_forever
    from .simulator.scenario import ScenarioError, load_scenario

    try:
        scenario = load_scenario(args.scenario) if args.scenario else None
    except ScenarioError as exc:
        return _fail(str(exc))
    print(f"simulator: OpenAI-compatible base URL http://{args.host}:{args.port}/v1", file=sys.stderr)
    serve_forever(scenario, args.host, args.port)
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    import contextlib
    import json
    from pathlib import Path

    from .install import InstallError, install, snippet

    for stream in (sys.stdout, sys.stderr):  # a path or name this terminal cannot encode is escaped, not a crash
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError):
                reconfigure(errors="backslashreplace")
    config = Path(args.config) if args.config else None

    def confirm() -> bool:
        if not sys.stdin.isatty():
            print("Not a terminal: pass --yes to write.", file=sys.stderr)
            return False
        try:
            return input("Write this change? [y/N] ").strip().lower() in ("y", "yes")
        except (EOFError, KeyboardInterrupt):  # Ctrl-D / Ctrl-C at the prompt means no
            print()
            return False

    try:
        if args.print:  # the snippet on stdout, how it starts on stderr: stdout stays pure JSON
            data, how, _ = snippet(args.client, config, args.name, args.scope, args.env_from_shell)
            print(f"Command: {how.command} — {how.reason}.", file=sys.stderr)
            print(json.dumps(data, indent=2, ensure_ascii=False))
            return 0
        path = Path(args.path) if args.path else None
        return install(args.client, config, args.name, path, args.yes, confirm, args.scope, args.env_from_shell)
    except InstallError as exc:
        message = str(exc)
    except OSError as exc:  # a backstop: install() names its own failures, but never a traceback here
        message = f"install failed: {exc.strerror or exc} ({exc.filename}); fix that and run again"
    except RecursionError:
        message = "install failed: the client config is nested too deeply; fix it or pass --path"
    return _fail(" ".join(message.splitlines()))  # always one line


def cmd_init(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from .install import InstallError, init_config

    try:
        written, names = init_config(Path(args.path) if args.path else None, args.force)
    except InstallError as exc:
        return _fail(" ".join(str(exc).splitlines()))
    except OSError as exc:  # a backstop, as for install
        return _fail(f"init failed: {exc.strerror or exc} ({exc.filename}); pass --path elsewhere")
    quoted = shlex.quote(str(written))
    print(f"Wrote {written} (a commented starter config; it holds no keys).")
    if names:
        print(f"It reads the keys from: {', '.join(names)}. Export them (or edit the providers), then:")
    print(f"  mcp-keygate check --config {quoted}")
    print(f"  mcp-keygate install claude-desktop --config {quoted}   # or claude-code, cursor")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo()


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of days from 1 to 400, got {text!r}") from None
    if not 1 <= days <= 400:
        raise argparse.ArgumentTypeError(f"expected a whole number of days from 1 to 400, got {days}")
    return days


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="mcp-keygate", description="MCP server with rotating LLM API keys and model fallback."
    )
    parser.add_argument("--version", action="version", version=f"mcp-keygate {__version__}")
    sub = parser.add_subparsers(dest="command")

    config_help = "config file (default: $KEYGATE_CONFIG, else zero-config from the environment)"
    serve = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    serve.add_argument("--config", help=config_help)
    serve.add_argument(
        "--transport",
        default="stdio",
        choices=["stdio", "sse", "streamable-http", "http"],
        help="stdio (default); streamable-http (/mcp), sse (/sse), or http for both",
    )
    serve.add_argument("--host", default=None, help="HTTP transports: address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="HTTP transports: port (default 8931)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    serve.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one object per line (default text)"
    )
    serve.add_argument(
        "--watch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="reload when the config file changes (default: on for stdio, off for HTTP; SIGHUP always reloads)",
    )
    serve.set_defaults(func=cmd_serve)

    reload = sub.add_parser("reload", help="make running servers take their config again (no restart)")
    reload.add_argument("--config", help=config_help)
    reload.add_argument("--pid", type=int, help="the server's process id (default: every server of this config)")
    reload.set_defaults(func=cmd_reload)

    status = sub.add_parser("status", help="show the key table from the state store")
    status.add_argument("--config", help=config_help)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=float,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C; live in a terminal",
    )
    status.add_argument("--usage", action="store_true", help="tokens used per caller, model and key instead")
    status.add_argument(
        "--days", type=_days, default=30, help="with --usage: today and the days before (1-400, default 30)"
    )
    status.add_argument("--all", action="store_true", help="every key in the state store, not only this config's")
    status.set_defaults(func=cmd_status)

    check = sub.add_parser("check", help="validate the config and the keys it references")
    check.add_argument("--config", help=config_help)
    check.add_argument("--offline", action="store_true", help="do not try to reach the Redis state store")
    check.add_argument("--online", action="store_true", help="ask each provider that every model exists for each key")
    check.set_defaults(func=cmd_check)

    models = sub.add_parser("models", help="list the models each key of a provider can reach")
    models.add_argument("provider", help="a provider name from the config")
    models.add_argument("--config", help=config_help)
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    sim = sub.add_parser("simulator", help="run the bundled provider simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument("--scenario", help="TOML scenario file (see docs in mcp_keygate/simulator/scenario.py)")
    sim.set_defaults(func=cmd_simulator)

    install = sub.add_parser("install", help="register mcp-keygate in Claude Desktop, Claude Code or Cursor")
    install.add_argument("client", choices=["claude-desktop", "claude-code", "cursor"])
    install.add_argument("--config", help="the keygate config the client should start with (keys as env references)")
    install.add_argument("--name", default="keygate", help="the server's name in the client (default keygate)")
    install.add_argument("--path", help="the client's config file (default: where that client keeps it)")
    install.add_argument("--print", action="store_true", help="print the snippet only; write nothing")
    install.add_argument("--yes", action="store_true", help="write without asking (the diff is still shown)")
    install.add_argument(
        "--scope",
        choices=["user", "project"],
        help="claude-code only: user (default, ~/.claude.json, every project) or project (.mcp.json here)",
    )
    install.add_argument(
        "--env-from-shell",
        action="store_true",
        help="write this shell's values of the config's variables into the entry's env (default: placeholders)",
    )
    install.set_defaults(func=cmd_install)

    init = sub.add_parser("init", help="write a commented starter config (keygate.toml)")
    init.add_argument("--path", help="where to write it (default: keygate.toml in this directory)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(func=cmd_init)

    demo = sub.add_parser("demo", help="an offline demo: simulator + real server + real client")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except BrokenPipeError:  # the reader went away (`status --json | head`): nobody left to tell
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
