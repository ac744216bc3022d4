"""``edgefleet score batch``: score a CSV or .npy file in chunks on the fleet server or a device's agent.

Each chunk of ``--chunk-rows`` rows is one Open Inference Protocol v2
request to ``--server`` (cloud scoring, with the token) or ``--agent`` (a
device's local endpoint, which may itself fall back to the cloud). The input
tensor's name and datatype come from the model's metadata. Results of each
chunk are written atomically to ``OUTPUT.parts/`` and recorded in the
sidecar ``OUTPUT.progress.json``; an interrupted or partly failed run
continues where it stopped when run again with the same arguments (failed
chunks are tried again). Only when every chunk is scored is the output
written (``.csv``: one column per output value; ``.npy``: the first or
``--output-name`` output; ``.npz``: every output) and the sidecars removed.
BYTES outputs (e.g. a class name an entry script adds) are kept as
fixed-width unicode arrays, never as object arrays, so every file written
here loads with numpy's default ``allow_pickle=False``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Optional

import httpx
import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from fleet_protocol import oip
from fleet_protocol.errors import MessageError

from ..client import DEFAULT_SERVER, send
from ..errors import CliError
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import console, print_json

app = typer.Typer(help="Score files of inputs with a model, on the fleet server or a device.", no_args_is_help=True)


@app.command()
def batch(
    model: Annotated[str, typer.Argument(help="Model name (on the server) or module name (on an agent)")],
    input: Annotated[Path, typer.Option("--input", "-i", exists=True, dir_okay=False, help=".csv or .npy")],
    output: Annotated[Path, typer.Option("--output", "-o", help=".csv, .npy or .npz")],
    agent: Annotated[Optional[str], typer.Option(help="Score on this agent's endpoint, e.g. http://127.0.0.1:8181")] = None,
    version: Annotated[Optional[int], typer.Option(help="Model version (default: newest / the one running)")] = None,
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", min=1, help="Rows per request")] = 256,
    input_name: Annotated[Optional[str], typer.Option(help="Input tensor name (default: from metadata)")] = None,
    output_name: Annotated[Optional[str], typer.Option(help="Output tensor for .npy (default: the first)")] = None,
    prefer_cloud: Annotated[bool, typer.Option(help="With --agent: ask the agent to score in the cloud")] = False,
    server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False,
) -> None:
    """Score INPUT with MODEL in chunks; resumable; prints a summary (rows, errors, time, where scored)."""
    if output.suffix not in (".csv", ".npy", ".npz"):
        raise CliError("--output must end in .csv, .npy or .npz", exit_code=2)
    base = (agent or server or os.environ.get("EDGEFLEET_SERVER") or DEFAULT_SERVER).rstrip("/")
    headers = {} if agent or not token else {"Authorization": f"Bearer {token}"}
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "")
    with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
        meta = _call(http, "GET", path)
        name, datatype = _input_spec(meta, input_name)
        rows = _read_input(input, datatype)
        job = Job(output, {"model": model, "version": version, "target": base, "input": str(input.resolve()),
                           "input_bytes": input.stat().st_size, "input_mtime_ns": input.stat().st_mtime_ns,
                           "chunk_rows": chunk_rows, "rows": len(rows)})
        parameters = {"prefer": "cloud"} if prefer_cloud else None
        chunks = range(0, len(rows), chunk_rows)
        started = time.monotonic()
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console, transient=json_out) as progress:
            task = progress.add_task(f"scoring {model}", total=len(rows), completed=job.rows_done())
            for index, start in enumerate(chunks):
                if job.is_done(index):
                    continue
                part = np.ascontiguousarray(rows[start:start + chunk_rows])
                body = oip.encode_request({name: part}, parameters=parameters)
                try:
                    response = _call(http, "POST", f"{path}/infer", json=body)
                    job.save_chunk(index, oip.decode_response(response), len(part),
                                   (response.get("parameters") or {}).get("scored_on", "unknown"))
                except (CliError, MessageError) as exc:
                    job.fail_chunk(index, len(part), str(exc))
                progress.advance(task, len(part))
        job.add_elapsed(time.monotonic() - started)
    summary = job.summary()
    if not summary["errors"]:
        job.assemble(output_name)
        summary["output"] = str(output)
    if json_out:
        print_json(summary)
    else:
        where = ", ".join(f"{rows} on {place}" for place, rows in sorted(summary["scored_on"].items())) or "-"
        console.print(f"{summary['rows']} rows, {summary['errors']} errors, {summary['elapsed_s']:.1f}s; "
                      f"scored: {where}", highlight=False)
        if summary["errors"]:
            console.print(f"first error: {summary['first_error']}\nrun the same command again to retry the "
                          f"failed chunks (progress in {job.progress_path})", highlight=False)
    if summary["errors"]:
        raise typer.Exit(1)


class Job:
    """The sidecar state of one batch: finished chunk files, failures, where each chunk was scored."""

    def __init__(self, output: Path, settings: dict):
        self.output = output
        self.progress_path = output.with_name(output.name + ".progress.json")
        self.parts = output.with_name(output.name + ".parts")
        state = None
        if self.progress_path.exists():
            state = json.loads(self.progress_path.read_text())
            if state.get("settings") != settings:
                raise CliError(f"{self.progress_path} belongs to another run (different model, input or chunk "
                               "size); remove it and the .parts folder to start over", exit_code=2)
        self.state = state or {"settings": settings, "done": {}, "failed": {}, "elapsed_s": 0.0}
        self.state["failed"] = {}  # failed chunks are tried again on every run
        self.parts.mkdir(exist_ok=True)
        self._write()

    def is_done(self, index: int) -> bool:
        return str(index) in self.state["done"] and (self.parts / f"{index:08d}.npz").exists()

    def rows_done(self) -> int:
        return sum(d["rows"] for k, d in self.state["done"].items() if self.is_done(int(k)))

    def save_chunk(self, index: int, outputs: dict[str, np.ndarray], rows: int, scored_on: str) -> None:
        tmp = self.parts / f"{index:08d}.tmp.npz"
        np.savez(tmp, **{name: _loadable(array) for name, array in outputs.items()})
        os.replace(tmp, self.parts / f"{index:08d}.npz")
        self.state["done"][str(index)] = {"rows": rows, "scored_on": scored_on}
        self._write()

    def fail_chunk(self, index: int, rows: int, reason: str) -> None:
        self.state["failed"][str(index)] = {"rows": rows, "error": reason}
        self._write()

    def add_elapsed(self, seconds: float) -> None:
        self.state["elapsed_s"] += seconds
        self._write()

    def summary(self) -> dict:
        scored_on: dict[str, int] = {}
        for done in self.state["done"].values():
            scored_on[done["scored_on"]] = scored_on.get(done["scored_on"], 0) + done["rows"]
        failed = self.state["failed"]
        return {"rows": self.state["settings"]["rows"], "scored": sum(scored_on.values()),
                "errors": sum(f["rows"] for f in failed.values()), "failed_chunks": len(failed),
                "first_error": next((f["error"] for f in failed.values()), None),
                "elapsed_s": round(self.state["elapsed_s"], 3), "scored_on": scored_on}

    def assemble(self, output_name: str | None) -> None:
        chunks = [np.load(self.parts / f"{int(k):08d}.npz") for k in sorted(self.state["done"], key=int)]
        names = list(chunks[0].files) if chunks else []
        outputs = {n: np.concatenate([c[n] for c in chunks]) for n in names}
        tmp = self.output.with_name(self.output.name + ".tmp" + self.output.suffix)
        if self.output.suffix == ".npz":
            np.savez(tmp, **outputs)
        elif self.output.suffix == ".npy":
            if output_name is not None and output_name not in outputs:
                raise CliError(f"the model has no output {output_name!r} (outputs: {', '.join(names)})")
            np.save(tmp, outputs[output_name or names[0]])
        else:
            _write_csv(tmp, outputs)
        os.replace(tmp, self.output)
        shutil.rmtree(self.parts)
        self.progress_path.unlink()

    def _write(self) -> None:
        tmp = self.progress_path.with_name(self.progress_path.name + ".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        os.replace(tmp, self.progress_path)


def _call(http: httpx.Client, method: str, path: str, **kwargs) -> dict:
    """One request, tried again under the CLI's one retry policy (an infer is idempotent), or a CliError."""
    try:
        response = send(http, method, path, idempotent=True, **kwargs)
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach {http.base_url} ({type(exc).__name__}: {exc})") from None
    if response.status_code == 401:
        raise CliError("the server refused the API token: pass --token or set EDGEFLEET_TOKEN")
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:300]}
    if response.status_code != 200:
        reason = body.get("error") or body.get("detail") if isinstance(body, dict) else body
        raise CliError(f"{method} {path} failed ({response.status_code}): {reason}")
    return body


def _input_spec(meta: dict, input_name: str | None) -> tuple[str, str]:
    inputs = meta.get("inputs") or []
    if input_name is None:
        if len(inputs) != 1:
            raise CliError(f"the model has {len(inputs)} inputs; name one with --input-name", exit_code=2)
        return inputs[0]["name"], inputs[0]["datatype"]
    for spec in inputs:
        if spec["name"] == input_name:
            return input_name, spec["datatype"]
    raise CliError(f"the model has no input {input_name!r}", exit_code=2)


def _read_input(path: Path, datatype: str) -> np.ndarray:
    dtype = oip.DATATYPES.get(datatype)
    if dtype is None or datatype == "BYTES":
        raise CliError(f"batch scoring supports numeric inputs, not {datatype}")
    if path.suffix == ".npy":
        array = np.load(path, mmap_mode="r")
    elif path.suffix == ".csv":
        with path.open(newline="") as handle:
            rows = [r for r in csv.reader(handle) if r]
        if rows and not _numeric(rows[0]):
            rows = rows[1:]  # a header
        try:
            array = np.asarray(rows, dtype=np.float64)
        except ValueError as exc:
            raise CliError(f"{path}: every value must be a number ({exc})") from None
    else:
        raise CliError("--input must end in .csv or .npy", exit_code=2)
    if array.ndim < 1 or not len(array):
        raise CliError(f"{path} holds no rows")
    return array.astype(dtype, copy=False)


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _loadable(array: np.ndarray) -> np.ndarray:
    """BYTES (object arrays of str) as fixed-width unicode: ``np.load`` needs no pickle for them."""
    return array.astype(str) if array.dtype == object else array


def _write_csv(path: Path, outputs: dict[str, np.ndarray]) -> None:
    columns, header = [], []
    for name, array in outputs.items():
        flat = array.reshape(len(array), -1) if array.ndim > 1 else array.reshape(-1, 1)
        columns.append(flat)
        header += [name] if flat.shape[1] == 1 else [f"{name}_{i}" for i in range(flat.shape[1])]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in range(len(columns[0]) if columns else 0):
            writer.writerow([v for column in columns for v in column[i].tolist()])
