"""One way for every command to print a table: :func:`print_table`, drawn by ``rich``.

On a terminal the table gets rich's styling and wraps to the window. Piped or redirected
(a log, ``grep``, a test's captured output) it is plain text: no colour codes, no wrapping
at an assumed 80 columns, no trailing padding, and each row starts with its first cell, so
``line.split()`` still finds the columns.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import TextIO

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

# Wide enough that a piped table never wraps; rich only fills what the cells need.
_PIPE_WIDTH = 10_000

Rows = Sequence[Mapping[str, object]] | pd.DataFrame


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return str(value)


def build_table(rows: Rows, title: str | None = None, right: Collection[str] = ()) -> Table:
    """A borderless rich table of ``rows`` (dicts sharing keys, or a DataFrame); ``right`` columns align right."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        header_style="bold",
    )
    for column in frame.columns:
        table.add_column(str(column), justify="right" if column in right else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    return table


def print_table(rows: Rows, title: str | None = None, right: Collection[str] = (), file: TextIO | None = None) -> None:
    """Print ``rows`` as a table to ``file`` (default: the current ``sys.stdout``)."""
    out = file if file is not None else sys.stdout
    table = build_table(rows, title, right)
    console = Console(file=out)
    if console.is_terminal:
        console.print(table)
        return
    plain = Console(file=io.StringIO(), width=_PIPE_WIDTH, color_system=None)
    with plain.capture() as captured:
        plain.print(table)
    out.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
