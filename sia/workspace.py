"""A workspace: one ledger, one harness repository and one artifact store in a folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness_repo import ArtifactStore, HarnessRepo
from ledger import DuckDBRecorder
from sia.errors import WorkspaceError

__all__ = ["DEFAULT_WORKSPACE", "Workspace"]

DEFAULT_WORKSPACE = Path(os.environ.get("SIA_WORKSPACE", "sia-workspace"))


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.duckdb"

    @property
    def repo_path(self) -> Path:
        return self.root / "harness.git"

    @property
    def artifacts_path(self) -> Path:
        return self.root / "artifacts"

    @classmethod
    def create(cls, root: Path) -> Workspace:
        ws = cls(Path(root))
        ws.root.mkdir(parents=True, exist_ok=True)
        HarnessRepo.init(ws.repo_path)
        ws.artifacts_path.mkdir(exist_ok=True)
        return ws

    @classmethod
    def open(cls, root: Path) -> Workspace:
        ws = cls(Path(root))
        if not ws.ledger_path.exists():
            raise WorkspaceError(
                f"no SIA workspace at {ws.root} (start one with `sia run`, or pass --workspace)"
            )
        return ws

    def writer(self) -> DuckDBRecorder:
        return DuckDBRecorder(self.ledger_path)

    def reader(self) -> DuckDBRecorder:
        return DuckDBRecorder(self.ledger_path, read_only=True)

    def repo(self) -> HarnessRepo:
        return HarnessRepo.open(self.repo_path)

    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.artifacts_path)
