"""``edgefleet agent run``: the device agent daemon; ``edgefleet agent supervise``: it, run from its current
environment and rolled back when a new version fails; ``edgefleet agent enroll``: its identity."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import CliError, require_extra
from ..options import JsonOpt
from ..output import parse_tags, print_json

app = typer.Typer(help="Run the device agent.", no_args_is_help=True)


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", exists=True, dir_okay=False,
                                         help="Agent configuration (TOML): device_id, state_dir, broker_url, "
                                              "trusted_keys, profile, ...")],
) -> None:
    """Connect to the broker, install what the server wants here, and serve predictions locally."""
    require_extra("agent")
    from edge_agent.config import load_config

    from ..agent_process import exec_agent

    try:
        load_config(config)
    except (ValueError, OSError) as exc:
        raise CliError(f"{config}: {exc}") from None
    exec_agent(config)  # the agent runs in this process, without the CLI's libraries (agent_process.py)


@app.command()
def supervise(
    config: Annotated[Path, typer.Option("--config", "-c", exists=True, dir_okay=False,
                                         help="Agent configuration (TOML) with install_prefix set")],
) -> None:
    """Run the agent from INSTALL_PREFIX/current, restart it, and roll a new agent version back if it fails.

    A new version (a bundle of kind agent) must report healthy, connected with its modules serving, within
    update_health_deadline_s and in at most update_max_starts starts; otherwise current goes back to the previous
    environment, whose agent reports why. Run it under systemd with Restart=on-failure.
    """
    require_extra("agent")
    from edge_agent.config import load_config
    from edge_agent.supervisor import Supervisor, SupervisorError

    try:
        agent_config = load_config(config)
    except (ValueError, OSError) as exc:
        raise CliError(f"{config}: {exc}") from None
    if agent_config.install_prefix is None:
        raise CliError(f"{config}: set install_prefix (the directory holding envs/ and current) to supervise the "
                       "agent", exit_code=2)
    try:
        code = Supervisor(config, agent_config).run_forever()
    except SupervisorError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:  # e.g. current points at an environment that is not there
        raise CliError(f"the supervisor cannot run the agent: {exc}") from None
    raise typer.Exit(code)


@app.command()
def enroll(
    server: Annotated[str, typer.Option("--server", help="The fleet server's URL, e.g. http://fleet:8080")],
    token: Annotated[str, typer.Option("--token", envvar="EDGEFLEET_ENROLL_TOKEN", show_envvar=True,
                                       help="The one-time token from `edgefleet device enroll` (the variable "
                                            "keeps it out of the process list)")],
    state_dir: Annotated[Path, typer.Option("--state-dir", help="The agent's state (its key goes in "
                                            "identity/, mode 0600)")] = Path("edgefleet-agent"),
    config: Annotated[Optional[Path], typer.Option("--config", help="Where to write the agent config "
                                                   "(default STATE_DIR/agent.toml)")] = None,
    profile: Annotated[Optional[str], typer.Option("--profile", help="Firmware profile name (`edgefleet profile "
                                                   "list`) or .toml path [default: generic-cpu]")] = None,
    scoring_port: Annotated[Optional[int], typer.Option("--scoring-port", min=0, max=65535,
                                                        help="Local Open Inference Protocol port; give each agent "
                                                             "on one host its own (0: any free) [default: 8181]")
                            ] = None,
    cloud_url: Annotated[Optional[str], typer.Option("--cloud-url", help="Fleet server that scores what the device "
                                                     "cannot (OIP v2), e.g. http://fleet:8080 [default: none]")
                         ] = None,
    cloud_token: Annotated[Optional[str], typer.Option("--cloud-token", envvar="EDGEFLEET_CLOUD_TOKEN",
                                                       help="API token for --cloud-url (`edgefleet token create`)",
                                                       show_default=False)] = None,
    tags: Annotated[Optional[list[str]], typer.Option("--tags", help="Device tags key=value, repeatable or "
                                                      "comma-separated; the operator's tags win")] = None,
    install_prefix: Annotated[Optional[Path], typer.Option("--install-prefix", file_okay=False,
                                                           help="Where the agent's environments live (envs/, "
                                                                "current, confirmed): the agent updates itself, run "
                                                                "by `edgefleet agent supervise` [default: no "
                                                                "self-update]")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Make this device's key pair here, get its certificate with the token, write a ready-to-run config."""
    from edge_agent.config import ConfigError
    from edge_agent.enroll import AgentOptions, device_id_from_token, enroll as enroll_device

    options = AgentOptions(profile=profile, scoring_port=scoring_port, cloud_url=cloud_url, cloud_token=cloud_token,
                           tags=parse_tags(tags),
                           install_prefix=str(install_prefix.resolve()) if install_prefix else None)
    try:
        written = enroll_device(server_url=server, token=token, state_dir=state_dir,
                                config_out=config or state_dir / "agent.toml", options=options)
    except ConfigError as exc:
        raise CliError(f"nothing was enrolled (the token is still good): {exc}", exit_code=2) from None
    if json_out:
        print_json({"device_id": device_id_from_token(token), "config": str(written.resolve()),
                    "state_dir": str(state_dir.resolve())})
        return
    typer.echo(f"enrolled; the private key stayed here. Start the agent with:\n  edgefleet agent run --config {written}")


@app.command("serve-bundle")
def serve_bundle(
    bundle: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A signed bundle file (.efb)")],
    key: Annotated[str, typer.Option("--key", envvar="EDGEFLEET_BUNDLE_KEY",
                                     help="The fleet's signing public key (hex) the bundle must verify against")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Local Open Inference Protocol port")] = 8181,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 in a container)")] = "127.0.0.1",
    state_dir: Annotated[Path, typer.Option("--state-dir", help="Where the bundle is installed")] = Path(
        "edgefleet-bundle"),
    profile: Annotated[str, typer.Option(help="Firmware profile name or .toml path")] = "generic-cpu",
) -> None:
    """Verify and install one bundle with the agent's installer and serve it; no broker, no server."""
    require_extra("agent")
    import signal
    import threading

    from edge_agent.standalone import serve_bundle as serve
    from fleet_protocol.errors import EdgefleetError

    try:
        server = serve(bundle.read_bytes(), trusted_key_hex=key, state_dir=state_dir, profile=profile, host=host,
                       port=port)
    except (EdgefleetError, ValueError, OSError) as exc:
        raise CliError(f"cannot serve {bundle}: {exc}") from None
    bound_host, bound_port = server.address
    typer.echo(f"serving {bundle.name} at http://{bound_host}:{bound_port}/v2/models", err=False)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.stop()
