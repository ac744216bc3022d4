"""``edgefleet model``: the model registry (register, list, show, delete), pipeline (optimize, profile) and drift."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from fleet_protocol.fields import is_ascii_decimal

from ..client import ApiClient
from ..errors import CliError
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import console, format_tags, parse_tags, print_fields, print_json, print_table

app = typer.Typer(help="Register models and browse the registry (name, auto-incremented versions, tags).",
                  no_args_is_help=True)


def split_ref(ref: str, *, takes: str = "NAME or NAME:VERSION") -> tuple[str, int | None]:
    """``iris`` → ``("iris", None)``; ``iris:3`` → ``("iris", 3)``; ``takes`` is what the command's error names."""
    name, sep, version = ref.partition(":")
    if not sep:
        return name, None
    if not is_ascii_decimal(version):
        raise CliError(f"{ref!r} is not {takes} (VERSION is a number)", exit_code=2)
    return name, int(version)


@app.command()
def register(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                         help="ONNX (.onnx) or TFLite (.tflite) model; with --convert a pickled "
                                              "scikit-learn model (.pkl)")],
    name: Annotated[str, typer.Option("--name", "-n", help="Registry name; each registration gets the next version")],
    tag: Annotated[Optional[list[str]], typer.Option("--tag", "-t", help="key=value, repeatable")] = None,
    prop: Annotated[Optional[list[str]], typer.Option("--property", "-p", help="key=value, repeatable")] = None,
    convert: Annotated[bool, typer.Option("--convert", help="The file is a pickled scikit-learn estimator: the "
                                                            "server converts it to ONNX (unpickling runs code, so "
                                                            "this needs an operator token)")] = False,
    allow_duplicate: Annotated[bool, typer.Option("--allow-duplicate", help="Register a new version even when the "
                                                                           "name already holds the same bytes "
                                                                           "(refused otherwise)")] = False,
    baseline: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False,
                                                     help="Drift baseline: .npy, .npz (one array per input) or "
                                                          ".csv rows of the model's inputs (at least 100); the "
                                                          "server stores quantile bins per column and output, and "
                                                          "bundles ship them to devices")] = None,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Upload a model file; the server reads its runtime, inputs and outputs.

    The same bytes as an existing version of the name are refused unless --allow-duplicate; an ONNX classifier
    converted with ZipMap is refused (convert with ZipMap off, or use --convert). With --baseline, devices report
    drift of this version's inputs and outputs (see `edgefleet model drift`).
    """
    fields = {"tags": json.dumps(parse_tags(tag)), "properties": json.dumps(parse_tags(prop)),
              **({"allow_duplicate": "true"} if allow_duplicate else {})}
    path = f"/api/models/{name}/from-sklearn" if convert else f"/api/models/{name}"
    record = ApiClient(server, token).upload(path, file, fields=fields, label=f"uploading {file.name}",
                                             extra={"baseline": baseline} if baseline else None)
    for warning in record.get("warnings", []):
        typer.echo(f"warning: {warning}", err=True)
    if json_out:
        print_json(record)
        return
    console.print(f"registered [bold]{record['name']}:{record['version']}[/bold] ({record['runtime']}, "
                  f"{record['size']} bytes, sha256 {record['sha256'][:12]})")
    reference = record.get("drift_reference")
    if reference:
        console.print(f"drift reference: {len(reference['features'])} features from {reference['rows']} rows "
                      f"({', '.join(reference['features'][:8])}{', ...' if len(reference['features']) > 8 else ''})",
                      highlight=False)


@app.command()
def drift(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION")],
    by: Annotated[Optional[str], typer.Option("--by", help="Group by this device tag (e.g. site), or 'device'")]
    = None,
    since: Annotated[str, typer.Option(help="Only windows since: ISO time or a span back from now (30m, 6h, 7d)")]
    = "24h",
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Drift of a version's inputs and outputs against its reference: PSI, Jensen-Shannon, KS, alerts.

    Merged from the histogram windows devices send (never raw data). A feature is flagged (!) when a statistic
    reaches its threshold over at least the minimum rows.
    """
    name, version = _exact(ref)
    report = ApiClient(server, token).get(f"/api/models/{name}/versions/{version}/drift", by=by, since=since)
    if json_out:
        print_json(report)
        return
    limits = report["thresholds"]
    console.print(f"{name}:{version}: thresholds PSI {limits['psi']}, JS {limits['js']}, KS {limits['ks']} "
                  f"(judged from {report['min_rows']} rows)", highlight=False)
    if not report["groups"]:
        console.print("no drift windows yet", highlight=False)
    for group in report["groups"]:
        print_table(f"{group['group']}: {group['devices']} device(s), {group['windows']} windows, {group['rows']} rows",
                    ["feature", "PSI", "JS", "KS", "NaN %", "out of range %", "drift"],
                    [(f["name"], _num(f["psi"]), _num(f["js"]), _num(f["ks"]), f"{f['nan_rate'] * 100:.1f}",
                      f"{f['out_of_range_rate'] * 100:.1f}", "!" if f["drifted"] else "")
                     for f in group["features"]])
    alerts = report["alerts"]
    print_table(f"Alerts ({sum(1 for a in alerts if not a['cleared'])} open)",
                ["id", "device", "feature", "raised", "cleared", "PSI", "JS", "KS"],
                [(a["id"], a["device_id"], a["feature"], a["raised"], a["cleared"] or "", _num(a["statistics"]["psi"]),
                  _num(a["statistics"]["js"]), _num(a["statistics"]["ks"])) for a in alerts])


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@app.command("list")
def list_models(
    name: Annotated[Optional[str], typer.Option(help="Only this name")] = None,
    query: Annotated[Optional[str], typer.Option("--query", "-q", help="Name contains")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", "-t", help="key=value, repeatable")] = None,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """List models (latest version of each name), filtered by name, substring or tags."""
    tags = [f"{k}={v}" for k, v in parse_tags(tag).items()]
    records = ApiClient(server, token).request("GET", "/api/models", params={
        k: v for k, v in {"name": name, "q": query, "tag": tags}.items() if v})
    if json_out:
        print_json(records)
        return
    print_table("Models", ["name", "latest", "runtime", "bytes", "tags", "created"],
                [(r["name"], r["version"], r["runtime"], r["size"], format_tags(r.get("tags")), r["created"])
                 for r in records])


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAME (all versions) or NAME:VERSION")],
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Show a model's versions, or one version with its inputs and outputs."""
    name, version = split_ref(ref)
    client = ApiClient(server, token)
    if version is None:
        records = client.get(f"/api/models/{name}")
        if json_out:
            print_json(records)
            return
        print_table(f"Model {name}", ["version", "runtime", "bytes", "sha256", "tags", "created"],
                    [(r["version"], r["runtime"], r["size"], r["sha256"][:12], format_tags(r.get("tags")),
                      r["created"]) for r in records])
        return
    record = client.get(f"/api/models/{name}/versions/{version}")
    if json_out:
        print_json(record)
        return
    print_fields(f"{name}:{version}", record)
    if "profile" in record["properties"]:
        print_profile(record["properties"]["profile"])


def print_profile(profile: dict) -> None:
    """The stored latency profile as a table, one row per onnxruntime provider (microseconds shown as ms)."""
    print_table(f"Profile ({profile['runs']} runs, batch {profile['batch']}, {profile['host']}, {profile['measured']})",
                ["provider", "p50 ms", "p95 ms", "p99 ms", "rows/s", "peak memory MiB"],
                [(provider, f"{m['p50_us'] / 1000:.3f}", f"{m['p95_us'] / 1000:.3f}", f"{m['p99_us'] / 1000:.3f}",
                  m["throughput_per_s"], f"{m['peak_memory_kib'] / 1024:.1f}")
                 for provider, m in profile["providers"].items()])


@app.command()
def optimize(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION to optimise; the result is the next version of NAME")],
    quantize: Annotated[Optional[str], typer.Option(help="int8: dynamic, or static with --calibration")] = None,
    calibration: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False,
                                                        help=".npy/.npz inputs for static int8 ranges")] = None,
    sample: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False,
                                                   help=".npy/.npz inputs to compare old and new outputs on")] = None,
    level: Annotated[str, typer.Option(help="basic (runs on every provider) or extended (CPU fusions)")] = "basic",
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Graph-optimise (and optionally int8-quantise) a version into a new one; report size and output change."""
    name, version = _exact(ref)
    files = {k: (p.name, p.read_bytes()) for k, p in (("calibration", calibration), ("sample", sample)) if p}
    result = ApiClient(server, token, timeout_s=600).request(
        "POST", f"/api/models/{name}/versions/{version}/optimize", files=files or None,
        data={k: v for k, v in {"level": level, "quantize": quantize}.items() if v})
    if json_out:
        print_json(result)
        return
    model, report = result["model"], result["report"]
    console.print(f"registered [bold]{model['name']}:{model['version']}[/bold] (optimized_from {name}:{version}, "
                  f"{model['properties']['optimization']})", highlight=False)
    console.print(f"  size  {report['size_before']} -> {report['size_after']} bytes ({report['size_ratio']:.1%})",
                  highlight=False)
    for output, change in report["outputs"].items():
        console.print(f"  output {output}: " + ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}"
                                                         for k, v in change.items()), highlight=False)
    for note in report["notes"]:
        console.print(f"  note: {note}", highlight=False)


@app.command()
def profile(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION")],
    sample: Annotated[Path, typer.Option(exists=True, dir_okay=False, help=".npy/.npz: the input of one call")],
    runs: Annotated[int, typer.Option(min=1, max=10_000, help="Timed calls per provider")] = 200,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Measure latency, throughput and peak memory on each onnxruntime provider of the server; stored with it."""
    name, version = _exact(ref)
    record = ApiClient(server, token, timeout_s=600).request(
        "POST", f"/api/models/{name}/versions/{version}/profile",
        files={"sample": (sample.name, sample.read_bytes())}, data={"runs": str(runs)})
    if json_out:
        print_json(record["properties"]["profile"])
        return
    print_profile(record["properties"]["profile"])


def _exact(ref: str) -> tuple[str, int]:
    name, version = split_ref(ref, takes="NAME:VERSION")
    if version is None:
        raise CliError(f"give the version as NAME:VERSION, not {ref!r}", exit_code=2)
    return name, version


@app.command()
def delete(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    server: ServerOpt = None, token: TokenOpt = None,
) -> None:
    """Delete a model version (refused while a deployment uses it)."""
    name, version = split_ref(ref, takes="NAME:VERSION")
    if version is None:
        raise CliError("give the version to delete as NAME:VERSION", exit_code=2)
    if not yes and not sys.stdin.isatty():
        raise CliError("refusing to delete without confirmation: pass --yes")
    if not yes and not typer.confirm(f"Delete {name}:{version}?"):
        raise CliError("not deleted", exit_code=1)
    ApiClient(server, token).request("DELETE", f"/api/models/{name}/versions/{version}")
    console.print(f"deleted {name}:{version}")


@app.command()
def accuracy(
    name: Annotated[str, typer.Argument(help="The model name scoring requests use (a module on devices, or a "
                                             "registered model scored in the cloud)")],
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Field accuracy per version from labels that came back (POST /v2/models/{name}/feedback, on the agents
    and on the server): labelled rows, accuracy with its Wilson 95 % interval, and the confusion matrix."""
    versions = ApiClient(server, token).get(f"/api/feedback/{name}")
    if json_out:
        print_json(versions)
        return
    if not versions:
        console.print(f"no labels for {name} yet: send them to POST /v2/models/{name}/feedback with the id of "
                      "the scored request", highlight=False, markup=False)
        return
    print_table(f"Field accuracy of {name}", ["version", "labelled", "correct", "accuracy", "95 % CI"],
                [(v["version"], v["labelled"], v["correct"], _percent(v["accuracy"]),
                  f"{_percent(v['accuracy_low'])}–{_percent(v['accuracy_high'])}") for v in versions])
    for v in versions:
        classes, rows = confusion_table(v["confusion"])
        print_table(f"v{v['version']} confusion matrix", ["true \\ predicted", *classes], rows)


def _percent(share: float) -> str:
    return f"{share * 100:.1f} %"  # as the verdict and the dashboard write it


def confusion_table(confusion: dict[str, dict[str, int]]) -> tuple[list[str], list[tuple]]:
    """``(classes, rows)`` of a square matrix: every class seen as a label or a prediction is a row and a column,
    so a class never predicted (or never labelled) still shows, with its zeros."""
    classes = sorted(set(confusion) | {p for row in confusion.values() for p in row})
    return classes, [(label, *(confusion.get(label, {}).get(p, 0) for p in classes)) for label in classes]
