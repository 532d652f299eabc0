"""One document model rendered twice: self-contained HTML (figures inlined as base64 PNG, inline CSS,
no external references, so the file can be mailed or archived alone) and Markdown (figures linked
from figures/). Tables are shown in the thesis' layout: AUC (95% CI), sensitivity, specificity, threshold.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from common.report.figures import Figure


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Note:
    """Something the reader must not miss: a missing part, a skipped figure, a caveat."""

    text: str


@dataclass(frozen=True)
class Table:
    title: str
    frame: pd.DataFrame
    caption: str = ""


@dataclass(frozen=True)
class Code:
    text: str


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;
color:#1d1d1d;line-height:1.45}
h1{font-size:1.6em;margin-bottom:4px}h2{border-bottom:2px solid #1b6ca8;padding-bottom:3px;margin-top:34px}
table{border-collapse:collapse;margin:8px 0 4px;font-size:.88em}th,td{border:1px solid #c9c9c9;padding:3px 8px;
text-align:right}th{background:#eef3f8}td:first-child,th:first-child{text-align:left}
.caption{font-size:.85em;color:#555;margin-bottom:14px}.note{background:#fff4d6;border-left:4px solid #e9a03b;
padding:6px 10px;margin:8px 0}figure{margin:12px 0 22px}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#444}pre{background:#f5f5f5;padding:8px;overflow-x:auto;font-size:.8em}
.tabletitle{font-weight:600;margin-top:16px}
"""


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def thesis_layout(frame: pd.DataFrame) -> pd.DataFrame:
    """A numeric thesis table (tables.thesis_table) in the thesis' printed columns."""
    rows = []
    for _, r in frame.iterrows():
        ok = r["status"] == "ok"
        ci = f"{fmt(r['auc'])} [{fmt(r['auc_ci95_low'])}-{fmt(r['auc_ci95_high'])}]" if ok else r["status"]
        rows.append(
            {
                "Model": r["model"],
                "Pre-trained with": r["pretrained_with"],
                "Dataset": r["dataset"],
                "Level": r["level"] or "-",
                "n (pos)": f"{int(r['n'])} ({int(r['n_pos'])})" if ok else "-",
                "AUC (95% CI)": ci,
                "Sensitivity": fmt(r["sensitivity"]),
                "Specificity": fmt(r["specificity"]),
                "Accuracy": fmt(r["accuracy"]),
                "Threshold": fmt(r["threshold"]),
            }
        )
    return pd.DataFrame.from_records(rows)


def to_html(title: str, subtitle: str, sections: list[Section]) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='caption'>{html.escape(subtitle)}</p>"]  # fmt: skip
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            parts.append(_html_block(block))
    parts.append("</body></html>")
    return "\n".join(parts)


def to_markdown(title: str, subtitle: str, sections: list[Section]) -> str:
    lines = [f"# {title}", "", f"_{subtitle}_", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += [*_markdown_block(block), ""]
    return "\n".join(lines)


def _html_block(block) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Note):
        return f"<div class='note'>{html.escape(block.text)}</div>"
    if isinstance(block, Code):
        return f"<pre>{html.escape(block.text)}</pre>"
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in block.frame.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>"
            for row in block.frame.itertuples(index=False)
        )
        caption = f"<div class='caption'>{html.escape(block.caption)}</div>" if block.caption else ""
        return (f"<div class='tabletitle'>{html.escape(block.title)}</div>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{caption}")  # fmt: skip
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        return (f"<figure><img alt='{html.escape(block.title)}' src='data:image/png;base64,{data}'>"
                f"<figcaption><b>{html.escape(block.title)}.</b> {html.escape(block.caption)}</figcaption></figure>")
    raise TypeError(f"unknown block {type(block).__name__}")


def _markdown_block(block) -> list[str]:
    if isinstance(block, Paragraph):
        return [block.text]
    if isinstance(block, Note):
        return [f"> **Note:** {block.text}"]
    if isinstance(block, Code):
        return ["```", block.text, "```"]
    if isinstance(block, Table):
        columns = [str(c) for c in block.frame.columns]
        rows = [[fmt(v).replace("|", "\\|") for v in row] for row in block.frame.itertuples(index=False)]
        lines = [f"**{block.title}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return lines + (["", f"_{block.caption}_"] if block.caption else [])
    if isinstance(block, Figure):
        return [f"![{block.title}](figures/{block.name}.png)", "", f"_{block.title}. {block.caption}_"]
    raise TypeError(f"unknown block {type(block).__name__}")
