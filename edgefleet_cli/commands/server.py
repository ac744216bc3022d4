"""``edgefleet server run``: the fleet server (API, dashboard, MQTT link, embedded broker); ``broker-config``:
the Mosquitto TLS configuration for it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fleet_protocol.errors import EdgefleetError

from ..errors import CliError, require_extra

app = typer.Typer(help="Run the fleet server.", no_args_is_help=True)


@app.command()
def run(
    data_dir: Annotated[Path, typer.Option(envvar="EDGEFLEET_DATA_DIR", help="Where the SQLite store (unless "
                                           "--database-url), keys, model files and chunks live")]
    = Path("edgefleet-data"),
    database_url: Annotated[Optional[str], typer.Option(envvar="EDGEFLEET_DATABASE_URL", help="Keep the fleet's "
                                                        "tables in PostgreSQL, e.g. postgresql://edgefleet@db:5432/"
                                                        "fleet (several servers may share it); default: SQLite in "
                                                        "--data-dir. Migrated to the newest schema at start")] = None,
    blob_dir: Annotated[Optional[Path], typer.Option(envvar="EDGEFLEET_BLOB_DIR", help="Keep model files and "
                                                     "chunks in DIR/blobs and DIR/chunks (e.g. a mount every replica "
                                                     "shares) [default: --data-dir; with --database-url: the "
                                                     "database, so replicas need no shared disk]")] = None,
    secret_key_file: Annotated[Optional[Path], typer.Option(envvar="EDGEFLEET_SECRET_KEY_FILE", help="With "
                                                            "--database-url: the key (base64, 32 bytes) that seals "
                                                            "the signing keys and the CA in the database [default: "
                                                            "$EDGEFLEET_SECRET_KEY]; the same on every replica")]
    = None,
    host: Annotated[str, typer.Option(help="Address the API binds to")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API and dashboard port")] = 8080,
    broker: Annotated[Optional[list[str]], typer.Option(help="External broker, e.g. mqtt://127.0.0.1:1883; "
                                                        "repeat it (or give URL,URL,...) for the nodes of a "
                                                        "cluster: the server and enrolled devices fail over "
                                                        "between them; default: start the embedded one")] = None,
    broker_port: Annotated[int, typer.Option(help="Port of the embedded broker")] = 1883,
    broker_tls_dir: Annotated[Optional[Path], typer.Option(help="The directory `edgefleet server broker-config` "
                                                           "wrote: the server connects with mutual TLS")] = None,
    broker_pid_file: Annotated[Optional[Path], typer.Option(help="Mosquitto's pid file: revocations reload it")] = None,
    public_broker: Annotated[Optional[str], typer.Option(help="Broker URL handed to enrolling devices "
                                                         "(default: --broker)")] = None,
    public_url: Annotated[Optional[str], typer.Option(help="The URL devices reach this server at, written into "
                                                      "GET /install.sh (default: the URL each request came in on; "
                                                      "set it behind a proxy or TLS terminator)")] = None,
    content_url: Annotated[Optional[list[str]], typer.Option(
        "--content-url", help="Base URL devices fetch bundle chunks from over HTTP(S) (GET URL/content/...), "
        "repeatable, tried in order: a cache or CDN first, then the servers; devices fall back to MQTT when none "
        "answers [default: --public-url; without it, chunks go over MQTT only]")] = None,
    wheels_dir: Annotated[Optional[Path], typer.Option(exists=True, file_okay=False,
                                                       help="Python wheels to serve at /wheels/ for air-gapped "
                                                            "installs (`install.sh --offline`); fill it with "
                                                            "`pip download`")] = None,
    grpc_port: Annotated[Optional[int], typer.Option(min=0, max=65535, help="Also serve cloud scoring over gRPC "
                                                     "(Open Inference Protocol) on this port; needs "
                                                     "edgefleet[grpc] [default: no gRPC]")] = None,
    shared_subscriptions: Annotated[bool, typer.Option(
        "--shared-subscriptions", help="Several server replicas on one external broker: subscribe to device topics "
        "through $share/edgefleet/... so each message goes to one replica (Mosquitto 2; not the embedded broker)")]
    = False,
    server_id: Annotated[Optional[str], typer.Option(help="This replica's name, unique among replicas and stable "
                                                     "across its restarts (its MQTT client id is "
                                                     "edgefleet-server-NAME when shared) [default: HOSTNAME-PORT]")]
    = None,
    leader_lease_s: Annotated[float, typer.Option(min=0.1, help="Replicas on PostgreSQL: the leader's lease in "
                                                  "seconds; a dead leader is replaced about this soon")] = 5.0,
    leader_renew_s: Annotated[float, typer.Option(min=0.05, help="How often the leader renews its lease (and the "
                                                  "others ask for it), in seconds; under --leader-lease-s, "
                                                  "about a third of it")] = 1.5,
    telemetry_retention: Annotated[str, typer.Option(envvar="EDGEFLEET_TELEMETRY_RETENTION",
                                                     help="Keep raw telemetry, drift windows and captures this "
                                                          "long (30m, 12h, 7d); older ones live on in the "
                                                          "minute and hour rollups")] = "7d",
    minute_rollup_retention: Annotated[str, typer.Option(envvar="EDGEFLEET_MINUTE_ROLLUP_RETENTION",
                                                         help="Keep minute rollups of telemetry this long")] = "30d",
    hour_rollup_retention: Annotated[Optional[str], typer.Option(envvar="EDGEFLEET_HOUR_ROLLUP_RETENTION",
                                                                 help="Keep hour rollups this long "
                                                                      "[default: kept]")] = None,
) -> None:
    """Start the server; at the first start of a data dir it prints the admin token once."""
    require_extra("server")
    from fleet_server.config import ServerConfig
    from fleet_server.runner import run_server
    from sqlalchemy.exc import SQLAlchemyError

    try:
        run_server(ServerConfig(data_dir=data_dir, database_url=database_url, blob_dir=blob_dir,
                                secret_key_file=secret_key_file, host=host, port=port,
                                broker_url=",".join(broker) if broker else None,
                                embedded_broker_port=broker_port, broker_tls_dir=broker_tls_dir,
                                broker_pid_file=broker_pid_file, public_broker_url=public_broker,
                                public_url=public_url, content_urls=tuple(content_url or ()),
                                wheels_dir=wheels_dir, grpc_port=grpc_port,
                                shared_subscriptions=shared_subscriptions, server_id=server_id,
                                leader_lease_s=leader_lease_s, leader_renew_s=leader_renew_s,
                                telemetry_retention_s=_span("--telemetry-retention", telemetry_retention),
                                minute_rollup_retention_s=_span("--minute-rollup-retention", minute_rollup_retention),
                                hour_rollup_retention_s=None if hour_rollup_retention is None
                                else _span("--hour-rollup-retention", hour_rollup_retention)))
    except (EdgefleetError, RuntimeError, ValueError, OSError) as exc:  # a port taken, a bad broker URL or TLS dir
        raise CliError(f"the server stopped: {exc}") from None
    except SQLAlchemyError as exc:  # the database is unreachable or refused us
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]  # a URL SQLAlchemy cannot parse
        raise CliError(f"the server stopped: the database failed: {reason}") from None  # has no .orig


def _span(option: str, text: str) -> int:
    """Seconds in a span such as ``7d``; a one-line error naming the option otherwise."""
    from fleet_server.spans import span_s

    seconds = span_s(text)
    if not seconds:
        raise CliError(f"{option} {text!r} is not a span of time such as 30m, 12h or 7d")
    return seconds


@app.command("broker-config")
def broker_config(
    out: Annotated[Path, typer.Option("--out", help="Directory for mosquitto.conf, certificates, CRL and ACL")],
    port: Annotated[int, typer.Option(help="The broker's TLS port")] = 8883,
    data_dir: Annotated[Path, typer.Option(envvar="EDGEFLEET_DATA_DIR", help="The server's data dir (its CA)")]
    = Path("edgefleet-data"),
    database_url: Annotated[Optional[str], typer.Option(envvar="EDGEFLEET_DATABASE_URL", help="The servers' "
                                                        "shared database, which holds the CA (sealed) instead of "
                                                        "--data-dir")] = None,
    secret_key_file: Annotated[Optional[Path], typer.Option(envvar="EDGEFLEET_SECRET_KEY_FILE", help="With "
                                                            "--database-url: the key that seals the CA [default: "
                                                            "$EDGEFLEET_SECRET_KEY]")] = None,
    hostname: Annotated[Optional[list[str]], typer.Option("--hostname", help="DNS name devices use for the broker, "
                                                          "repeatable (default localhost)")] = None,
    ip: Annotated[Optional[list[str]], typer.Option("--ip", help="IP devices use, repeatable (default 127.0.0.1)")]
    = None,
    bind: Annotated[str, typer.Option(help="Address the broker listens on")] = "127.0.0.1",
    replica: Annotated[Optional[list[str]], typer.Option("--replica", help="Also write an MQTT identity for this "
                                                         "server replica (its --server-id), repeatable: replicas "
                                                         "sharing the broker each need their own")] = None,
) -> None:
    """Write a Mosquitto config (mutual TLS, per-device ACL, CRL) signed by the server's CA; print how to run both."""
    from fleet_server.broker_config import write_broker_config
    from fleet_server.ca import CertificateAuthority
    from fleet_server.config import check_server_id

    try:
        replicas = tuple(check_server_id(name) for name in replica or ())
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if database_url is None:
        ca = CertificateAuthority.load_or_create(data_dir / "ca")
    else:  # the CA every replica uses, from the database (made there if this runs before the first server start)
        from fleet_server.config import ServerConfig
        from fleet_server.storage import open_storage
        from fleet_server.store import Database

        db = Database(database_url)
        shown_url = db.display_url  # never a password on the terminal
        try:
            config = ServerConfig(data_dir=data_dir, database_url=database_url, secret_key_file=secret_key_file)
            ca = CertificateAuthority.open(open_storage(config, db).ca)
        finally:
            db.close()
    files = write_broker_config(out, ca, port=port, hostnames=hostname, ips=ip, bind=bind, replicas=replicas)
    host = (hostname or ip or ["localhost"])[0]
    typer.echo(f"wrote {files.config} (CA {files.ca_cert}, CRL {files.crl}, ACL {files.acl})\n"
               f"start Mosquitto:\n  mosquitto -c {files.config} & echo $! > {out}/mosquitto.pid\n"
               f"start the server against it:\n  edgefleet server run --data-dir {data_dir} "
               + (f"--database-url {shown_url} " if database_url else "")
               + (f"--secret-key-file {secret_key_file} " if database_url and secret_key_file else "") +
               f"--broker mqtts://127.0.0.1:{port} --broker-tls-dir {out} --broker-pid-file {out}/mosquitto.pid "
               f"--public-broker mqtts://{host}:{port}"
               + (" --shared-subscriptions --server-id NAME (NAME: one of " + ", ".join(replicas) + ")"
                  if replicas else "") + "\n"
               "revocations rewrite the CRL and SIGHUP the broker: new connections with a revoked certificate are "
               "refused; open ones stay up until they drop (restart the broker to cut them at once)")
