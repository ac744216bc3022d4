"""``edgefleet capture``: list and download the inputs and outputs devices captured, per model version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..client import ApiClient
from ..errors import CliError
from ..options import JsonOpt, ServerOpt, TokenOpt
from ..output import console, print_json, print_table

app = typer.Typer(help="Captured model inputs and outputs, for retraining.", no_args_is_help=True)
PAGE = 1_000

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model (module) name")]
VersionOpt = Annotated[Optional[int], typer.Option("--version", "-v", help="Model version")]
ReasonOpt = Annotated[Optional[str], typer.Option(
    "--reason", help="Only captures taken for this reason: low_confidence is the hard examples of joint "
                     "inference (rows below fallback.confidence_below, whether the cloud model answered them "
                     "or not)")]


@app.command("list")
def list_captures(model: ModelOpt = None, version: VersionOpt = None,
                  device: Annotated[Optional[str], typer.Option(help="Device id")] = None,
                  reason: ReasonOpt = None, limit: Annotated[int, typer.Option(min=1, max=PAGE)] = 100,
                  server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Captures, oldest first, without their tensors."""
    records = ApiClient(server, token).get("/api/captures", model=model, version=version, device_id=device,
                                            reason=reason, limit=limit)
    if json_out:
        print_json(records)
        return
    if not records:
        console.print("no captures match: a module captures when its config has a \"capture\" block "
                      "(fraction_percent) or joint inference finds rows it is unsure of", highlight=False)
        return
    print_table("Captures", ["id", "model", "version", "device", "scored on", "reason", "bytes", "ts"],
                [(c["id"], c["model"], c["version"], c["device_id"], c["scored_on"], c.get("reason") or "sampled",
                  c["size"], c["ts"]) for c in records])


@app.command()
def download(output: Annotated[Path, typer.Option("--output", "-o", help="JSON Lines file to write")],
             capture_id: Annotated[Optional[list[int]], typer.Argument(help="Capture ids (default: all matching)")] = None,
             model: ModelOpt = None, version: VersionOpt = None, reason: ReasonOpt = None,
             server: ServerOpt = None, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Write captures as JSON Lines, one per line with its inputs and outputs as OIP tensors."""
    if not capture_id and model is None and reason is None:
        raise CliError("name the captures: give capture ids, --model (and --version) or --reason", exit_code=2)
    api = ApiClient(server, token)
    ids = list(capture_id or [])
    if not ids:
        after = 0
        while True:
            page = api.get("/api/captures", model=model, version=version, reason=reason, after_id=after, limit=PAGE)
            ids += [c["id"] for c in page]
            if len(page) < PAGE:
                break
            after = page[-1]["id"]
    tmp = output.with_name(output.name + ".part")
    with tmp.open("w", encoding="utf-8") as handle:
        for number in ids:
            handle.write(json.dumps(api.get(f"/api/captures/{number}"), separators=(",", ":")) + "\n")
    tmp.replace(output)
    if json_out:
        print_json({"output": str(output), "captures": len(ids)})
    else:
        console.print(f"wrote {len(ids)} capture(s) to {output}", highlight=False)
