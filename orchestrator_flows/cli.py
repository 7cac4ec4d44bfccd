"""`orchestrator-flows`: run the demo, the service, or the demo agents from one command."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import uvicorn
from pydantic import SecretStr

from orchestrator_flows.core.errors import ConfigError
from orchestrator_flows.core.flows import load_flows
from orchestrator_flows.demo import agents as demo_agents
from orchestrator_flows.infra.embedded_redis import EmbeddedRedisError, start_embedded_redis
from orchestrator_flows.infra.resources import redacted
from orchestrator_flows.infra.settings import Settings, settings_from_environment
from orchestrator_flows.ops.logs import configure_logging
from orchestrator_flows.service.fingerprints import fingerprint_secret
from orchestrator_flows.web.auth import Role, keyring_from, new_key
from orchestrator_flows.web.http_limits import PROTOCOL, HttpLimits, uvicorn_options


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


class ServerThread:
    """Runs uvicorn servers in one background thread and event loop (no signal handlers there),
    each with the HTTP limits. On stop, answers still open after `grace_sec` (a console page's
    live feed never ends by itself) are cut."""

    def __init__(
        self, apps: dict[tuple[str, int], object], limits: HttpLimits, grace_sec: float = 5.0
    ):
        options = uvicorn_options(limits) | {"timeout_graceful_shutdown": grace_sec}
        self.servers = [
            uvicorn.Server(
                uvicorn.Config(app, host=host, port=port, log_level="warning", **options)
            )
            for (host, port), app in apps.items()
        ]
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import asyncio

        async def serve_all() -> None:
            await asyncio.gather(*(server.serve() for server in self.servers))

        asyncio.run(serve_all())

    def start(self, wait_sec: float = 15.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + wait_sec
        while not all(server.started for server in self.servers):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise CliError("a server did not start (see the log above)")
            time.sleep(0.02)

    def stop(self) -> None:
        for server in self.servers:
            server.should_exit = True
            # The console's live feeds end at their next tick instead of holding the shutdown.
            if (state := getattr(server.config.app, "state", None)) is not None:
                state.stopping = True
        self.thread.join(15)


def ensure_port_free(host: str, port: int, what: str) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CliError(
                f"port {port} on {host} is already in use ({what}): {exc.strerror}"
            ) from exc


def agent_addresses(settings: Settings, host: str) -> dict[str, int]:
    """The demo agents' ports: those of the configured agent URLs, one per role."""
    flows = load_flows(settings.flows_file)
    ports = {}
    for role in demo_agents.ROLES:
        url = flows.agents.get(role)
        if url is None or urlsplit(url).port is None:
            raise CliError(f"flows.toml gives no URL with a port for the demo agent {role!r}")
        ports[role] = urlsplit(url).port
    return ports


def start_agents(settings: Settings, host: str, advertise: str) -> tuple[ServerThread, dict]:
    ports = agent_addresses(settings, host)
    for role, port in ports.items():
        ensure_port_free(host, port, f"demo agent {role}")
    urls = {role: f"http://{advertise}:{port}/" for role, port in ports.items()}
    apps = {(host, ports[role]): demo_agents.agent_app(role, url) for role, url in urls.items()}
    local = "127.0.0.1" if host in ("0.0.0.0", "") else host  # check them from here
    servers = ServerThread(apps, HttpLimits.from_settings(settings))
    try:
        servers.start()
        check_agents_answer({role: f"http://{local}:{port}/" for role, port in ports.items()})
    except BaseException:
        servers.stop()
        raise
    return servers, urls


def check_agents_answer(urls: dict[str, str]) -> None:
    for role, url in urls.items():
        try:
            httpx.get(url + ".well-known/agent-card.json", timeout=5).raise_for_status()
        except httpx.HTTPError as exc:
            raise CliError(f"demo agent {role} at {url} is not answering: {exc}") from exc


@contextlib.contextmanager
def session_store(settings: Settings) -> Iterator[str]:
    """REDIS_URL when set; otherwise an embedded Redis for as long as the command runs."""
    if settings.redis_url:
        print(f"session store: Redis at REDIS_URL ({redacted(settings.redis_url)})")
        yield settings.redis_url
        return
    embedded = start_embedded_redis(settings.orch_state_dir)
    print(
        f"session store: embedded Redis, data in {embedded.data_dir} "
        "(set REDIS_URL to use a real Redis)"
    )
    try:
        yield embedded.url
    finally:
        embedded.stop()


def run_demo(args: argparse.Namespace) -> int:
    from orchestrator_flows.demo.call import (
        walk_call,  # the scripted call, kept apart from the plumbing
    )
    from orchestrator_flows.web.app import create_app

    settings = settings_from_environment()
    configure_logging("WARNING", "console")  # the demo prints each turn itself
    ensure_port_free(args.host, args.port, "the service")
    # Fresh keys for this demo only: authentication stays on, and nothing needs configuring.
    keys = {role: new_key(role)[0] for role in Role}
    api_keys = SecretStr(",".join(f"{role}:{key}" for role, key in keys.items()))
    with session_store(settings) as redis_url:
        agents, urls = start_agents(settings, "127.0.0.1", "127.0.0.1")
        secret = SecretStr(fingerprint_secret(settings))  # the embedded Redis's, or the set one
        service_settings = settings.model_copy(
            update={
                "redis_url": redis_url,
                "agent_urls": urls,
                "api_keys": api_keys,
                "idempotency_secret": secret,
            }
        )
        service = ServerThread(
            {(args.host, args.port): create_app(service_settings)},
            HttpLimits.from_settings(service_settings),
        )
        try:
            service.start()
            base = f"http://{args.host}:{args.port}"
            failure = walk_call(base, keys[Role.CLIENT], keys[Role.AUDITOR])
            if failure:
                print(f"\nThe demo call FAILED at {failure}.")
            if args.once:
                return 1 if failure else 0
            print_serving(base, keys, after_failure=failure is not None)
            _wait_for_ctrl_c()
            return 0
        finally:
            service.stop()
            agents.stop()


def print_serving(base: str, keys: dict[Role, str], *, after_failure: bool) -> None:
    anyway = " anyway, to look into it" if after_failure else ""
    print(f"\nServing{anyway} at {base} (API docs: {base}/docs). Ctrl-C stops.")
    print(f"API keys for this run: client  {keys[Role.CLIENT]}")
    print(f"                       auditor {keys[Role.AUDITOR]}")
    print(f"                       admin   {keys[Role.ADMIN]}")
    print(f"                       monitor {keys[Role.MONITOR]}")
    print(f"Console: {base}/console (sign in with the auditor, admin or monitor key)")
    print(f"e.g. curl -H 'Authorization: Bearer {keys[Role.AUDITOR]}' {base}/session/<id>")
    print(f"     curl -X DELETE -H 'Authorization: Bearer {keys[Role.ADMIN]}' {base}/session/<id>")


def run_agents(args: argparse.Namespace) -> int:
    settings = settings_from_environment()
    configure_logging(settings.log_level, settings.log_format)
    agents, urls = start_agents(settings, args.host, args.advertise_host or args.host)
    for role, url in urls.items():
        print(f"{role:<10} {url}")
    print("Demo agents serving. Ctrl-C stops.")
    try:
        _wait_for_ctrl_c()
    finally:
        agents.stop()
    return 0


def run_serve(args: argparse.Namespace) -> int:
    settings = settings_from_environment()
    configure_logging(settings.log_level, settings.log_format)
    load_flows(settings.flows_file, settings.agent_urls)  # fail here, clearly, not in a worker
    keyring_from(settings)
    ensure_port_free(args.host, args.port, "the service")
    with session_store(settings) as redis_url:
        # The workers read their settings from the environment they inherit.
        os.environ["REDIS_URL"] = redis_url
        os.environ["IDEMPOTENCY_SECRET"] = fingerprint_secret(settings)
        if args.workers > 1:
            os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", fresh_metrics_dir(settings))
        uvicorn.run(
            "orchestrator_flows.web.app:app",
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=None,  # uvicorn's lines go through our structured logging too
            # SIGTERM: stop taking requests, finish the turns in flight for up to this long.
            timeout_graceful_shutdown=settings.shutdown_grace_sec,
            http=PROTOCOL,  # the HTTP limits, read by each worker from its environment
            ws_max_size=settings.max_body_bytes,  # a call's socket takes turns, no larger
            access_log=False,  # access_log.py logs each request, without its query string
        )
    return 0


def run_new_key(args: argparse.Namespace) -> int:
    key, hashed = new_key(Role(args.role))
    print(f"key (give it to the {args.role}; it is not stored anywhere): {key}")
    print(f"API_KEYS entry:       {args.role}:{key}")
    print(f"API_KEYS_FILE line:   {hashed}")
    return 0


def fresh_metrics_dir(settings: Settings) -> str:
    """Where uvicorn workers share their Prometheus samples; emptied at each start."""
    path = settings.orch_state_dir.resolve() / "prometheus"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


def _wait_for_ctrl_c() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's meaning, then its default; none for a flag or an option without one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.required or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="orchestrator-flows", description=__doc__, formatter_class=_HelpWithDefaults
    )
    commands = top.add_subparsers(dest="command", required=True)

    def command(name: str, about: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=about, description=about, formatter_class=_HelpWithDefaults
        )

    demo = command("demo", "demo agents + service, then one whole call")
    demo.add_argument(
        "--once", action="store_true", help="exit after the call: status 0 if it passed, else 1"
    )
    demo.add_argument("--port", type=int, default=8000, help="the service's port")
    demo.add_argument("--host", default="127.0.0.1", help="the address the service listens on")
    demo.set_defaults(run=run_demo)
    serve = command("serve", "the service alone (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="the port to listen on")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (they share the embedded Redis)"
    )
    serve.set_defaults(run=run_serve)
    agents = command("agents", "the demo A2A agents alone")
    agents.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (ports from flows.toml)"
    )
    agents.add_argument(
        "--advertise-host",
        help="host name written in the agent cards (default: the --host)",
    )
    agents.set_defaults(run=run_agents)
    keys = command("keys", "API keys").add_subparsers(dest="keys", required=True)
    about_new = "make a random API key and print its hash line"
    new = keys.add_parser(
        "new", help=about_new, description=about_new, formatter_class=_HelpWithDefaults
    )
    new.add_argument(
        "--role",
        choices=[role.value for role in Role],
        required=True,
        help="what the key may do (see docs/security.md)",
    )
    new.set_defaults(run=run_new_key)
    return top


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `docker stop` sends SIGTERM: shut down as on Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        # Ctrl-C stops every command, as uvicorn's handler stops `serve`, even when this was
        # started with SIGINT ignored (a non-interactive shell's background job), where Python
        # would leave it ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return args.run(args)
    except (CliError, ConfigError, EmbeddedRedisError) as exc:
        print(f"orchestrator-flows: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
