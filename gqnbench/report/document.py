"""The report as a document tree (sections of paragraphs, tables and figures) and its renderers.

One tree renders to Markdown (figures linked as PNG files) and to a self-contained HTML page
(figures embedded as base64 PNG, inline CSS, no script and no external resource). The HTML
is the same Markdown converted by Python-Markdown (``tables`` and ``attr_list``) inside a
fixed page skeleton. A table cell is coloured only when the section marked it with
:func:`status_cell`; its text is never inspected for that.
"""

from __future__ import annotations

import base64
import html
import re
import xml.etree.ElementTree as etree
from dataclasses import dataclass, field
from pathlib import Path

import markdown
import pandas as pd
from markdown.treeprocessors import Treeprocessor

STATUSES = ("ok", "bad", "warn")


class StatusText(str):
    """A table cell's text with an explicit status; equal to (and written as) its plain text."""

    status: str

    def __new__(cls, text: str, status: str) -> StatusText:
        if status not in STATUSES:
            raise ValueError(f"status {status!r}: use one of {', '.join(STATUSES)}")
        obj = super().__new__(cls, text)
        obj.status = status
        return obj


def status_cell(text: object, status: str) -> StatusText:
    """Mark a display cell ``"ok"``, ``"bad"`` or ``"warn"``: the HTML colours it, the Markdown shows ``text``."""
    return StatusText(str(text), status)


@dataclass
class Paragraph:
    text: str


@dataclass
class Note:
    """A one-line remark, e.g. why a section is empty."""

    text: str


@dataclass
class Table:
    name: str
    caption: str
    display: pd.DataFrame  # already formatted: every cell a string with its unit
    csv: str  # path of the raw CSV, relative to the report folder
    sources: list[str]


@dataclass
class Figure:
    name: str
    caption: str
    png: Path  # absolute path of the written PNG
    rel: str  # the same, relative to the report folder
    sources: list[str]


Block = Paragraph | Note | Table | Figure


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    intro: list[Block]
    sections: list[Section]


def sources_line(sources: list[str]) -> str:
    """Group relative paths by folder: 'a/{x.json, y.json}; b.json' keeps long lists short but complete."""
    groups: dict[str, list[str]] = {}
    for src in sources:
        folder, _, name = src.rpartition("/")
        groups.setdefault(folder, []).append(name)
    parts = []
    for folder, names in groups.items():
        if not folder:
            parts += names
        elif len(names) == 1:
            parts.append(f"{folder}/{names[0]}")
        else:
            parts.append(f"{folder}/{{{', '.join(names)}}}")
    return "; ".join(parts)


# ---------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in _as_text(frame).itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _md_alt(text: str) -> str:
    return text.replace("[", "\\[").replace("]", "\\]")


def _md_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Note):
        return f"> {block.text}"
    if isinstance(block, Table):
        src = f"\n\n<sub>Source: {sources_line(block.sources)} · data: [{block.csv}]({block.csv})</sub>"
        return f"**{block.caption}**\n\n{markdown_table(block.display)}{src}"
    if isinstance(block, Figure):
        return (
            f"![{block.caption}]({block.rel})\n\n*{block.caption}*  \n<sub>Source: {sources_line(block.sources)}</sub>"
        )
    raise TypeError(f"unknown block {type(block).__name__}")


def render_markdown(doc: Document) -> str:
    parts = [f"# {doc.title}", *(_md_block(b) for b in doc.intro), "## Contents"]
    parts.append("\n".join(f"- [{s.title}](#{s.anchor})" for s in doc.sections))
    for section in doc.sections:
        parts.append(f'<a id="{section.anchor}"></a>\n\n## {section.title}')
        parts += [_md_block(b) for b in section.blocks]
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------- HTML

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .15em; margin-top: 2em; }
table { border-collapse: collapse; margin: .4em 0 .2em; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; vertical-align: top; }
th { background: #eef1f5; text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.nw { white-space: nowrap; }
td.bad { background: #fde2e1 !important; color: #9b1c1c; font-weight: 600; }
td.ok { background: #e3f6e5 !important; color: #1d6b2a; }
td.warn { background: #fff4d6 !important; color: #8a5a00; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .3em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-style: italic; font-size: .92em; }
.src { color: #666; font-size: .8em; margin: 0 0 1.2em; word-break: break-all; }
.tw { overflow-x: auto; max-width: 100%; }
.note { border-left: 4px solid #c9a227; background: #fffaf0; padding: .3em .8em; }
code { background: #f2f2f2; padding: 0 .2em; border-radius: 3px; }
nav ul { columns: 2; }
"""


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    # pandas 3 keeps NaN through astype(str); a table cell must always be text. A str (a
    # StatusText included) is kept as it is, so its status survives.
    def text(v: object) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "–"
        return v if isinstance(v, str) else str(v)

    return frame.map(text)


# A number, optionally with a unit: right-aligned and kept on one line (layout only, never a colour).
_NUMERIC = re.compile(r"^[+-]?([\d,]*\.?\d+(e[+-]?\d+)?|∞)\s*(%|x|ms|s|MiB|GiB|nats|steps)?$")


def _layout_class(text: str) -> str:
    if _NUMERIC.match(text.strip()):
        return "num"
    return "nw" if len(text) <= 20 else ""  # short labels ("proposed (metagqn)") read better unbroken


def cell_classes(frame: pd.DataFrame) -> list[list[str]]:
    """The HTML class of every body cell: its explicit status, else numeric / short-label layout."""
    return [
        [getattr(v, "status", "") or _layout_class(v) for v in row] for row in _as_text(frame).itertuples(index=False)
    ]


class _TableTree(Treeprocessor):
    """Gives each table body cell its class, adds the caption and wraps the table in a scroller.

    Runs before inline parsing (priority above 20), so the caption's Markdown is rendered too.
    """

    def __init__(self, md: markdown.Markdown) -> None:
        super().__init__(md)
        self.caption = ""
        self.classes: list[list[str]] = []

    def run(self, root: etree.Element) -> None:
        for index, table in enumerate(list(root)):
            if table.tag != "table":
                continue
            body = table.find("tbody")
            for tr, classes in zip(body if body is not None else [], self.classes):
                for td, cls in zip(tr.findall("td"), classes):
                    if cls:
                        td.set("class", cls)
            if self.caption:
                caption = etree.Element("caption")
                caption.text = self.caption
                table.insert(0, caption)
            # The wrapper scrolls sideways instead of pushing a wide table off the page.
            wrapper = etree.Element("div", {"class": "tw"})
            root.remove(table)
            wrapper.append(table)
            root.insert(index, wrapper)


class _Converter:
    """One Python-Markdown instance (tables, attr_list) reused for every fragment of the page."""

    def __init__(self) -> None:
        self.md = markdown.Markdown(extensions=["tables", "attr_list"], output_format="html")
        self.tables = _TableTree(self.md)
        self.md.treeprocessors.register(self.tables, "gqnbench_tables", 25)

    def block(self, text: str) -> str:
        return self.md.reset().convert(text)

    def inline(self, text: str) -> str:
        """``text`` as inline HTML: the paragraph Markdown wraps it in is dropped."""
        return self.block(text).removeprefix("<p>").removesuffix("</p>")

    def table(self, frame: pd.DataFrame, caption: str) -> str:
        self.tables.caption, self.tables.classes = caption, cell_classes(frame)
        try:
            return self.block(markdown_table(frame))
        finally:
            self.tables.caption, self.tables.classes = "", []


def _src(text: str) -> str:
    return f'<p class="src">{html.escape(text)}</p>'


def _html_block(block: Block, conv: _Converter) -> str:
    if isinstance(block, Paragraph):
        return conv.block(block.text)
    if isinstance(block, Note):
        return conv.block(f"{block.text}\n{{: .note}}")
    if isinstance(block, Table):
        source = f"Source: {sources_line(block.sources)} · data: {block.csv}"
        return conv.table(block.display, block.caption) + _src(source)
    if isinstance(block, Figure):
        data = base64.b64encode(block.png.read_bytes()).decode("ascii")
        image = conv.inline(f"![{_md_alt(block.caption)}](data:image/png;base64,{data})")
        caption = conv.inline(block.caption)
        source = f"Source: {sources_line(block.sources)} · image: {block.rel}"
        return f"<figure>{image}<figcaption>{caption}</figcaption></figure>" + _src(source)
    raise TypeError(f"unknown block {type(block).__name__}")


def render_html(doc: Document) -> str:
    """The self-contained page: Markdown fragments through Python-Markdown in a fixed skeleton."""
    conv = _Converter()
    toc = conv.block("\n".join(f"- [{s.title}](#{s.anchor})" for s in doc.sections))
    body = [f"<h1>{html.escape(doc.title)}</h1>", *(_html_block(b, conv) for b in doc.intro)]
    body.append(f"<nav><h2>Contents</h2>{toc}</nav>")
    for section in doc.sections:
        body.append(f'<section id="{html.escape(section.anchor)}"><h2>{html.escape(section.title)}</h2>')
        body += [_html_block(b, conv) for b in section.blocks]
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(doc.title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
