"""The `UPDATES/` files written to a folder (local output, the demo): the Hub mirror's files,
synchronously, with no commits to batch. A RESUMED update's superseded ERROR/CANCELLED file is
removed from the folder as the RESUMED file is written (see `events.projections.updates`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from events.atomic import write_atomic
from events.projections.base import MirrorSettings, Projection
from events.projections.updates import ProjectionState, UpdateFile

log = structlog.get_logger(__name__)


class LocalMirror(Projection):
    """The same files written to `<folder>/UPDATES/` (local runs, the demo). Synchronous."""

    def __init__(
        self,
        folder: Path,
        *,
        job_id: str,
        repo_id: str = "local",
        settings: MirrorSettings = MirrorSettings(),
        secrets: tuple[str, ...] = (),
    ) -> None:
        super().__init__(repo_id, job_id, settings.thinning, secrets)
        self.folder = Path(folder)
        self._written = 0
        self._error: str | None = None

    def start(self, timeout: float | None = None) -> None:
        (self.folder / "UPDATES").mkdir(parents=True, exist_ok=True)

    def _accept(self, update: UpdateFile, state: ProjectionState) -> None:
        try:
            path = self.folder / update.path
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, update.content.decode("utf-8"))
            for gone in update.deletes:  # after the new file: the folder never lacks both
                (self.folder / gone).unlink(missing_ok=True)
            self._written += 1
        except OSError as exc:  # a mirror failure never fails the job
            self._error = f"{type(exc).__name__}: {exc}"
            log.warning("local mirror write failed", error=self._error)

    def flush(self, timeout: float | None = None) -> bool:
        return self._error is None

    def close(self, timeout: float | None = None) -> dict[str, Any]:
        return self.status()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "ok": self._error is None,
                "mirrored_seq": self._state.last_seq,
                "pending": 0,  # written synchronously: nothing waits
                "last_error": self._error,
                "commits": self._written,
            }
