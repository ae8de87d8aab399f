"""The report as a document tree (sections of paragraphs, tables and figures) and its renderers.

One tree renders to Markdown (figures linked as PNG files) and to a self-contained HTML page
(figures embedded as base64 PNG, inline CSS, no script and no external resource). Paragraph
text uses a tiny Markdown subset that both renderers understand: ``**bold**``, ``*italic*``
and ``code`` in backticks.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


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
td.good { background: #e3f6e5 !important; color: #1d6b2a; }
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

# A number, optionally with a unit: right-aligned and kept on one line.
_NUMERIC = re.compile(r"^[+-]?([\d,]*\.?\d+(e[+-]?\d+)?|∞)\s*(%|x|ms|s|MiB|GiB|nats|steps)?$")


def inline_html(text: str) -> str:
    """The Markdown subset of paragraphs (**bold**, *italic*, `code`) as HTML, everything else escaped."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])", r"<em>\1</em>", out)
    return out


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    # pandas 3 keeps NaN through astype(str); a table cell must always be text.
    return frame.map(lambda v: "–" if v is None or (isinstance(v, float) and v != v) else str(v))


def _cell_class(text: str) -> str:
    low = text.lower()
    if low.startswith("regression") or low.startswith("fail"):
        return "bad"
    if low.startswith("improved") or low == "passed":
        return "good"
    if low.startswith("not reached") or low.startswith("diverged") or low.startswith("missing"):
        return "warn"
    return "num" if _NUMERIC.match(text.strip()) else ""


def html_table(frame: pd.DataFrame, caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in _as_text(frame).itertuples(index=False):
        cells = []
        for value in row:
            cls = _cell_class(value)
            if not cls and len(value) <= 20:
                cls = "nw"  # short labels ("proposed (metagqn)") read better unbroken
            attr = f' class="{cls}"' if cls else ""
            cells.append(f"<td{attr}>{html.escape(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{inline_html(caption)}</caption>" if caption else ""
    # The wrapper scrolls sideways instead of pushing a wide table off the page.
    return f'<div class="tw"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _html_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{inline_html(block.text)}</p>"
    if isinstance(block, Note):
        return f'<p class="note">{inline_html(block.text)}</p>'
    if isinstance(block, Table):
        src = html.escape(sources_line(block.sources))
        return (
            html_table(block.display, block.caption)
            + f'<p class="src">Source: {src} · data: {html.escape(block.csv)}</p>'
        )
    if isinstance(block, Figure):
        data = base64.b64encode(block.png.read_bytes()).decode("ascii")
        cap = inline_html(block.caption)
        return (
            f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{cap}</figcaption></figure>"
            f'<p class="src">Source: {html.escape(sources_line(block.sources))} · image: {html.escape(block.rel)}</p>'
        )
    raise TypeError(f"unknown block {type(block).__name__}")


def render_html(doc: Document) -> str:
    toc = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in doc.sections)
    body = [f"<h1>{html.escape(doc.title)}</h1>", *(_html_block(b) for b in doc.intro)]
    body.append(f"<nav><h2>Contents</h2><ul>{toc}</ul></nav>")
    for section in doc.sections:
        body.append(f'<section id="{section.anchor}"><h2>{html.escape(section.title)}</h2>')
        body += [_html_block(b) for b in section.blocks]
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(doc.title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
