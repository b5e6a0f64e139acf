"""A report as blocks (headings, text, tables, figures), rendered twice: Markdown with
relative figure links (reads on GitHub) and one self-contained HTML page (figures inlined as
base64 PNG); and the writing of a report's files, all checked before the first is written."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lt_ray import storage
from lt_ray.analysis import plots
from lt_ray.analysis import tables as T

FIGURES_DIR = "figures"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Text:
    text: str  # Markdown inline: `code` only


@dataclass(frozen=True)
class Items:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    markup: bool = False  # cells carry Markdown emphasis (**bold**, *group*)


@dataclass(frozen=True)
class Image:
    name: str  # figure stem: figures/<name>.png and .svg
    caption: str


Block = Heading | Text | Items | Table | Image


@dataclass
class Build:
    blocks: list[Block] = field(default_factory=list)
    figures: dict[str, dict[str, bytes]] = field(default_factory=dict)  # name -> png/svg bytes
    notes: list[str] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def figure(self, name: str, fig: Any, caption: str) -> None:
        self.figures[name] = plots.render(fig)
        self.add(Image(name, caption))

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.add(Text(text))


def render_markdown(blocks: Sequence[Block]) -> str:
    """GitHub Markdown; figures linked as ``figures/<name>.png`` (relative)."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Text):
            parts.append(block.text)
        elif isinstance(block, Items):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            parts.append(T.to_markdown(block.frame))
        else:
            png, svg = f"{FIGURES_DIR}/{block.name}.png", f"{FIGURES_DIR}/{block.name}.svg"
            parts.append(f"![{_alt(block.caption)}]({png})\n\n*{block.caption}* ([SVG]({svg}))")
    return "\n\n".join(parts) + "\n"


def _alt(text: str) -> str:
    return text.replace("[", "(").replace("]", ")")


def _inline_html(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"\[`([^`]+)`\]\(([^)\s]+)\)", r"<code>\1</code>", escaped)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", re.sub(r"\*([^*]+)\*", r"<em>\1</em>",
                                                          escaped))


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;font-size:0.8em;margin:1em 0;
max-width:100%}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;
white-space:nowrap}td:first-child,th:first-child{text-align:left;white-space:normal}
td:nth-child(2){white-space:normal}td.group{font-style:italic;font-weight:600;
background:#fafafa}th{background:#f3f3f3}figure{margin:1.5em 0}img{max-width:100%}
figcaption{font-size:0.9em;color:#555}code{background:#f3f3f3;padding:0 3px}"""


def render_html(title: str, blocks: Sequence[Block],
                figures: dict[str, dict[str, bytes]]) -> str:
    """One self-contained HTML page: inline CSS, figures as base64 PNG, no external asset."""
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            body.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Items):
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block.items)
                        + "</ul>")
        elif isinstance(block, Table):
            table = block.frame.to_html(index=False, border=0, escape=True)
            if block.markup:
                table = re.sub(r"\*\*([^*<]+)\*\*", r"<strong>\1</strong>", table)
                table = re.sub(r"<td>\*([^*<]+)\*</td>", r'<td class="group">\1</td>', table)
            body.append(table.replace(",", ",<wbr>"))  # long cell labels may wrap at commas
        else:
            data = base64.b64encode(figures[block.name]["png"]).decode()
            body.append(f'<figure><img src="data:image/png;base64,{data}" '
                        f'alt="{html.escape(block.caption)}"><figcaption>'
                        f"{html.escape(block.caption)}</figcaption></figure>")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(out_dir: str, files: dict[str, bytes], build: Build, title: str) -> list[str]:
    """Write ``files`` (name -> bytes), the figures, report.md and report.html into
    ``out_dir``; returns what was written."""
    for name, rendered in build.figures.items():
        for fmt, data in rendered.items():
            files[f"{FIGURES_DIR}/{name}.{fmt}"] = data
    files[REPORT_MD] = render_markdown(build.blocks).encode()
    files[REPORT_HTML] = render_html(title, build.blocks, build.figures).encode()
    written = []
    for name, data in files.items():
        path = storage.join(out_dir, *name.split("/"))
        storage.write_bytes(path, data)
        written.append(path)
    _remove_stale_figures(out_dir, set(files))
    return written


def _remove_stale_figures(out_dir: str, current: set[str]) -> None:
    """Remove the figures an earlier report left in ``out_dir/figures`` that this one did not
    write (their names follow the groups and the order of the studies), so that the folder
    holds this report's figures only."""
    folder = storage.join(out_dir, FIGURES_DIR)
    for name in storage.list_names(folder):
        if name.endswith((".png", ".svg")) and f"{FIGURES_DIR}/{name}" not in current:
            storage.remove_tree(storage.join(folder, name))


def figure_names(build: Build) -> tuple[str, ...]:
    return tuple(f"{FIGURES_DIR}/{n}.{fmt}" for n in build.figures for fmt in ("png", "svg"))
