"""A tiny document model for the reports this package writes (tables pages, the paper comparison):
headings, paragraphs of styled spans, bullet lists and tables, rendered to Markdown and to a standalone
HTML page. Tables go through tabulate in both formats (`pipe`, `unsafehtml`), so no Markdown is parsed.

A paragraph or list item is a list of spans; a span is a str (plain text) or a (style, text) pair with
style "b" (bold) or "code". Table cells are spans too (a bold best value is ("b", "61.0")).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field

STYLES = ("b", "code")


@dataclass
class Table:
    headers: list
    rows: list  # of lists of spans
    align: list = field(default_factory=list)  # "left" / "right" per column (default: left)


@dataclass
class Document:
    title: str  # the HTML page's <title>
    blocks: list = field(default_factory=list)  # ("h", level, spans) | ("p", spans) | ("ul", [spans]) | Table

    def heading(self, level: int, *spans) -> "Document":
        self.blocks.append(("h", level, list(spans)))
        return self

    def paragraph(self, *spans) -> "Document":
        self.blocks.append(("p", list(spans)))
        return self

    def bullets(self, items: list) -> "Document":
        self.blocks.append(("ul", [i if isinstance(i, list) else [i] for i in items]))
        return self

    def table(self, headers, rows, align=None) -> "Document":
        self.blocks.append(Table(list(headers), [list(r) for r in rows], list(align or [])))
        return self


def _spans(spans) -> list:
    return spans if isinstance(spans, list) else [spans]


def _md_span(span) -> str:
    if isinstance(span, str):
        return span
    style, text = span
    if style not in STYLES:
        raise ValueError(f"unknown span style {style!r}: use one of {STYLES}")
    return f"**{text}**" if style == "b" else f"`{text}`"


def _html_span(span) -> str:
    if isinstance(span, str):
        return html.escape(span, quote=False)
    style, text = span
    if style not in STYLES:
        raise ValueError(f"unknown span style {style!r}: use one of {STYLES}")
    return f"<{style}>{html.escape(text, quote=False)}</{style}>"


def _cells(row, render) -> list:
    return ["".join(render(s) for s in _spans(c)) for c in row]


def to_markdown(doc: Document) -> str:
    from tabulate import tabulate

    out = []
    for block in doc.blocks:
        if isinstance(block, Table):
            out.append(tabulate([_cells(r, _md_span) for r in block.rows], headers=block.headers, tablefmt="pipe",
                                colalign=block.align or None, disable_numparse=True))
        elif block[0] == "h":
            out.append("#" * block[1] + " " + "".join(_md_span(s) for s in block[2]))
        elif block[0] == "p":
            out.append("".join(_md_span(s) for s in block[1]))
        else:
            out.append("\n".join("- " + "".join(_md_span(s) for s in item) for item in block[1]))
    return "\n\n".join(out) + "\n"


STYLE = ("body{font-family:sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse;margin:.5em 0}"
         "th,td{border:1px solid #bbb;padding:2px 6px}th{background:#eee}")


def to_html(doc: Document) -> str:
    from tabulate import tabulate

    out = []
    for block in doc.blocks:
        if isinstance(block, Table):
            # unsafehtml: the cells are escaped here already (and carry our <b>); tabulate must not re-escape
            out.append(tabulate([_cells(r, _html_span) for r in block.rows],
                                headers=[html.escape(h, quote=False) for h in block.headers],
                                tablefmt="unsafehtml", colalign=block.align or None, disable_numparse=True))
        elif block[0] == "h":
            out.append(f"<h{block[1]}>" + "".join(_html_span(s) for s in block[2]) + f"</h{block[1]}>")
        elif block[0] == "p":
            out.append("<p>" + "".join(_html_span(s) for s in block[1]) + "</p>")
        else:
            out.append("<ul>\n" + "\n".join("<li>" + "".join(_html_span(s) for s in item) + "</li>"
                                            for item in block[1]) + "\n</ul>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html.escape(doc.title)
            + "</title><style>" + STYLE + "</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")
