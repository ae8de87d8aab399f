"""Where a report's artifacts go: figures/*.png, tables/*.csv, and the provenance of each.

Section builders call :meth:`ReportContext.table` and :meth:`ReportContext.figure`; both write
the artifact, record which results files it came from (paths relative to the report folder,
so the folder can be moved together with its inputs) and return the document block.

Artifacts are written to ``stage_dir`` (a private folder the report is assembled in, moved into
``out_dir`` only once every file of the report is written) while every path they record is
relative to ``out_dir``, where they end up.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gqnbench.files import atomic_write_bytes, atomic_write_text
from gqnbench.report.document import Figure, Table


@dataclass
class ReportContext:
    out_dir: Path
    stage_dir: Path | None = None  # where the files are written (default: out_dir)
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir).resolve()
        self.stage_dir = Path(self.stage_dir).resolve() if self.stage_dir is not None else self.out_dir
        (self.stage_dir / "figures").mkdir(parents=True, exist_ok=True)
        (self.stage_dir / "tables").mkdir(parents=True, exist_ok=True)

    def rel(self, path: str | os.PathLike) -> str:
        """A path relative to the report folder, with forward slashes."""
        return Path(os.path.relpath(Path(path).resolve(), self.out_dir)).as_posix()

    def _sources(self, sources: Iterable[str | os.PathLike]) -> list[str]:
        return sorted({self.rel(s) for s in sources})

    def table(
        self,
        name: str,
        data: pd.DataFrame,
        caption: str,
        sources: Iterable[str | os.PathLike],
        display: pd.DataFrame | None = None,
    ) -> Table:
        """Write ``data`` (raw numbers) to tables/<name>.csv; show ``display`` (formatted) in the report."""
        csv_path = self.out_dir / "tables" / f"{name}.csv"
        atomic_write_text(self.staged(csv_path), data.to_csv(index=False))
        srcs = self._sources(sources)
        self.artifacts.append({"artifact": self.rel(csv_path), "type": "table", "caption": caption, "sources": srcs})
        shown = display if display is not None else data.astype(str)
        return Table(name=name, caption=caption, display=shown, csv=self.rel(csv_path), sources=srcs)

    def staged(self, path: Path) -> Path:
        """Where the report file that ends up at ``path`` (under ``out_dir``) is written meanwhile."""
        return self.stage_dir / path.relative_to(self.out_dir)

    def figure(self, name: str, fig: Any, caption: str, sources: Iterable[str | os.PathLike]) -> Figure:
        """Save a matplotlib figure to figures/<name>.png and close it."""
        import matplotlib.pyplot as plt

        png_path = self.out_dir / "figures" / f"{name}.png"
        buf = io.BytesIO()
        # No Software/date metadata: the same results give byte-identical PNGs.
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        written = atomic_write_bytes(self.staged(png_path), buf.getvalue())
        srcs = self._sources(sources)
        self.artifacts.append({"artifact": self.rel(png_path), "type": "figure", "caption": caption, "sources": srcs})
        return Figure(name=name, caption=caption, png=written, rel=self.rel(png_path), sources=srcs)
