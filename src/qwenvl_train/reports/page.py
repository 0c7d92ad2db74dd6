"""The HTML page of a report: a title, sections of escaped text, tables, figures and gallery cards.

Self-contained: the style is inline, there is no script, and pictures are files in the report folder referenced
by relative paths. Every text given is escaped (:func:`html.escape`), so a conversation holding ``<img>`` or
``<script>`` shows as written.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import UserError
from ..outputs import check_output_folder, write_output

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
pre { background: #f6f6f6; padding: .6em; white-space: pre-wrap; word-break: break-word; font-size: .85em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
ol.errors li { font-family: monospace; font-size: .85em; color: #a00; }
.card { display: flex; gap: 1em; border: 1px solid #ddd; border-radius: 6px; padding: .8em; margin: .8em 0; }
.card.error { border-color: #d88; background: #fff8f8; }
.pictures { flex: 0 0 auto; display: flex; flex-direction: column; gap: .4em; max-width: 50%; }
.pictures img { max-width: 100%; height: auto; border: 1px solid #ccc; }
img.plot { max-width: 100%; height: auto; }
.text { flex: 1 1 auto; min-width: 0; }
.tag { display: inline-block; font-size: .75em; padding: 0 .4em; border-radius: 3px; background: #e4e8f4; }
.tag.error { background: #f4d4d4; } .note { color: #a00; font-size: .85em; }
.turn { margin: .3em 0; } .role { font-weight: bold; font-size: .8em; color: #555; }
.legend span { display: inline-block; width: .9em; height: .9em; vertical-align: middle; margin: 0 .3em; }
"""


class ReportError(UserError, OSError):
    """A report folder cannot be written; one line."""


def esc(text: object) -> str:
    """``text`` as HTML text (``<``, ``>``, ``&`` and quotes escaped)."""
    return html.escape(str(text), quote=True)


class Page:
    """An HTML page built section by section, then written once (:meth:`write`).

    Args:
        folder: the report folder (created); pictures go under ``folder/images`` (the PNG files already there,
            from an earlier report, are removed).
        title: the page title.
    """

    def __init__(self, folder: str | Path, title: str) -> None:
        check_output_folder(folder)  # a file, socket or device named as the folder: one line, nothing written
        self.folder = Path(folder)
        self.images = self.folder / "images"
        self.images.mkdir(parents=True, exist_ok=True)
        for stale in self.images.glob(
            "*.png"
        ):  # a report written here before: its pictures are not this one's
            stale.unlink()
        self.title = title
        self.parts: list[str] = [f"<h1>{esc(title)}</h1>"]

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{esc(text)}</h2>")

    def paragraph(self, text: str, css: str = "") -> None:
        self.parts.append(f'<p class="{esc(css)}">{esc(text)}</p>' if css else f"<p>{esc(text)}</p>")

    def preformatted(self, text: str) -> None:
        self.parts.append(f"<pre>{esc(text)}</pre>")

    def errors(self, lines: Sequence[str], limit: int | None = None) -> None:
        """A numbered list of error lines (the first ``limit`` of them, saying how many are left out)."""
        shown = lines if limit is None else lines[:limit]
        self.parts.append('<ol class="errors">' + "".join(f"<li>{esc(x)}</li>" for x in shown) + "</ol>")
        if len(shown) < len(lines):
            self.paragraph(f"... and {len(lines) - len(shown)} more (all of them in the command's output)")

    def table(self, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
        def cell(value: object) -> str:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            shown = f"{value:.4f}" if isinstance(value, float) else value
            return f'<td class="num">{esc(shown)}</td>' if numeric else f"<td>{esc(shown)}</td>"

        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def figure(self, path: Path, alt: str) -> None:
        """A picture of the report folder (a plot) on its own."""
        self.parts.append(f'<p><img class="plot" src="{esc(self.relative(path))}" alt="{esc(alt)}"></p>')

    def legend(self, entries: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
        spans = "".join(
            f'<span style="background: rgb{esc(colour)}"></span>{esc(label)}' for label, colour in entries
        )
        self.parts.append(f'<p class="legend">{spans}</p>')

    def card(
        self,
        title: str,
        tags: Sequence[str],
        pictures: Sequence[tuple[Path | None, str]],
        turns: Sequence[tuple[str, str]],
        notes: Sequence[str] = (),
        error: bool = False,
    ) -> None:
        """One gallery entry: pictures (a path, or None and the line saying why there is none) on the left, the
        title, tags, notes (error lines) and the conversation (``(role, text)`` pairs) on the right."""
        shown = []
        for path, caption in pictures:
            if path is None:
                shown.append(f'<div class="note">{esc(caption)}</div>')
            else:
                src = esc(self.relative(path))
                shown.append(f'<img class="picture" src="{src}" alt="{esc(caption)}" title="{esc(caption)}">')
        tag_html = "".join(
            f'<span class="tag{" error" if t == "error" else ""}">{esc(t)}</span> ' for t in tags
        )
        note_html = "".join(f'<div class="note">{esc(n)}</div>' for n in notes)
        turn_html = "".join(
            f'<div class="turn"><div class="role">{esc(role)}</div><pre>{esc(text)}</pre></div>'
            for role, text in turns
        )
        self.parts.append(
            f'<div class="card{" error" if error else ""}"><div class="pictures">{"".join(shown)}</div>'
            f'<div class="text"><div><b>{esc(title)}</b> {tag_html}</div>{note_html}{turn_html}</div></div>'
        )

    def relative(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.folder)).as_posix()

    def write(self) -> Path:
        """Write ``index.html`` (through a temporary file, so the page appears whole); returns its path."""
        text = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(self.title)}'
            f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(self.parts) + "\n</body></html>\n"
        )
        path = self.folder / "index.html"
        write_output(path, text)
        return path
