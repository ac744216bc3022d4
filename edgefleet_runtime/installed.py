"""What an installed module version is to the runtime: its record (name, version, digest, directory, envelope).

:meth:`edgefleet_runtime.runtime.Runtime.load` takes an :class:`ActiveRecord`;
the agent's installer (:mod:`edge_agent.installer`) writes and reads them as
``active.json``, the server's cloud scoring makes one for a bundle it unpacked.
Not here: installing, switching or reading ``active.json`` (the installer's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ActiveRecord:
    """What ``active.json`` says runs for one module."""

    name: str
    version: int
    digest: str
    dir: Path
    manifest: dict  # the signed envelope
    previous: "ActiveRecord | None" = None

    def to_dict(self, *, with_previous: bool = True) -> dict:
        doc = {"name": self.name, "version": self.version, "digest": self.digest, "dir": self.dir.name,
               "manifest": self.manifest}
        if with_previous:
            doc["previous"] = self.previous.to_dict(with_previous=False) if self.previous else None
        return doc

    @property
    def signed(self) -> dict:
        return self.manifest["signed"]


def version_dir_name(version: int, digest: str) -> str:
    return f"{version}-{digest[:12]}"
