"""``edgefleet profile``: the firmware profiles (hardware targets) agents run with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from firmware_profiles import list_profiles, load_profile

from ..options import JsonOpt
from ..output import console, print_json, print_table

app = typer.Typer(help="List, show and validate firmware profiles (accelerators, provider order, limits).",
                  no_args_is_help=True)


@app.command("list")
def list_command(json_out: JsonOpt = False) -> None:
    """The profiles shipped with edgefleet."""
    profiles = [load_profile(name) for name in list_profiles()]
    if json_out:
        print_json([p.to_dict() for p in profiles])
        return
    print_table("Firmware profiles", ["name", "arch", "memory MB", "accelerators", "ONNX providers", "LiteRT delegates"],
                [(p.name, p.arch, p.memory_mb, ",".join(p.accelerators),
                  " > ".join(e.name.removesuffix("ExecutionProvider") for e in p.onnx_providers),
                  " > ".join(d.name for d in p.tflite_delegates)) for p in profiles])


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="A shipped profile name or a path to a .toml file")],
    json_out: JsonOpt = False,
) -> None:
    """Everything a profile says, including provider options."""
    profile = load_profile(name)
    if json_out:
        print_json(profile.to_dict())
        return
    console.print(f"[bold]{profile.name}[/bold]  {profile.description}")
    console.print(f"arch {profile.arch}, memory {profile.memory_mb} MB, budget {profile.memory_budget_mb} MB, "
                  f"largest model {profile.max_model_bytes} bytes, accelerators {', '.join(profile.accelerators)}")
    print_table("ONNX Runtime execution providers (tried in order)", ["#", "provider", "options"],
                [(i, e.name, e.options or "") for i, e in enumerate(profile.onnx_providers, 1)])
    print_table("LiteRT delegates (tried in order)", ["#", "delegate", "library", "options"],
                [(i, d.name, d.library or "built in", d.options or "") for i, d in enumerate(profile.tflite_delegates, 1)])


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="Profile files to check")],
) -> None:
    """Check profile files; the first error names the file and the field."""
    for path in files:
        profile = load_profile(str(path))
        console.print(f"[green]valid[/green]: {path} ({profile.name})")
