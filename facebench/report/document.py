"""The report as a document: headings, paragraphs, bullet lists, tables and images, and its two writers,
Markdown and HTML.

One document model feeds both outputs, so the two never disagree. Inline markup is a tiny subset of
Markdown (`code`, **bold** and [text](url) links) that the HTML writer translates; a link to
``run:<experiment id>/<run id>`` or ``experiment:<id>`` becomes the MLflow UI's page when the report
names a UI. Nothing here reads a clock or the environment: the same document gives the same bytes.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    right: list[bool] = field(default_factory=list)  # right-align (numeric) per column


@dataclass
class Image:
    name: str      # file name under figures/
    caption: str

Block = Heading | Para | Bullets | Table | Image

_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def anchor(text: str) -> str:
    """A heading's anchor as GitHub writes it for Markdown (lower case, punctuation dropped, spaces to
    hyphens); the HTML writer gives each heading the same id, so ``[...](#anchor)`` works in both."""
    plain = _BOLD.sub(r"\1", _CODE.sub(r"\1", text)).lower()
    return re.sub(r"[^\w\- ]", "", plain).replace(" ", "-")


def run_page(ui: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI's page of a run, in its model-training view (MLflow 3 opens GenAI views by default)."""
    if not experiment_id:
        return f"{ui.rstrip('/')}/#/runs/{run_id}"
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def experiment_page(ui: str, experiment_id: str) -> str:
    """The MLflow UI's page of an experiment, opened on its runs (the model-training view)."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def resolve_links(text: str, ui: str | None) -> str:
    """``[text](run:<experiment id>/<run id>)`` and ``[text](experiment:<id>)`` become links to the run's
    or the experiment's page in the MLflow UI at ``ui`` (e.g. http://127.0.0.1:5000), or plain ``text``
    when the report is written without one."""
    def one(m: re.Match) -> str:
        label, url = m.group(1), m.group(2)
        if url.startswith("experiment:"):
            return f"[{label}]({experiment_page(ui, url[len('experiment:'):])})" if ui else label
        if not url.startswith("run:"):
            return m.group(0)
        experiment, _, run_id = url[4:].rpartition("/")
        return f"[{label}]({run_page(ui, experiment, run_id)})" if ui else label
    return _LINK.sub(one, text)


def to_markdown(doc: list[Block], ui: str | None = None, folder: str = "figures") -> str:
    """The document as Markdown; images are files in ``folder`` beside it."""
    parts = []
    for block in doc:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Para):
            parts.append(resolve_links(block.text, ui))
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {resolve_links(item, ui)}" for item in block.items))
        elif isinstance(block, Table):
            right = block.right or [False] * len(block.headers)
            lines = ["| " + " | ".join(block.headers) + " |",
                     "| " + " | ".join("---:" if r else "---" for r in right) + " |"]
            lines += ["| " + " | ".join(resolve_links(c, ui) for c in row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        elif isinstance(block, Image):
            parts.append(f"![{block.caption}]({folder}/{block.name})\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"

_CODE = re.compile(r"`([^`]+)`")

_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def _inline(text: str, ui: str | None = None) -> str:
    text = _BOLD.sub(r"<strong>\1</strong>", _CODE.sub(r"<code>\1</code>", html.escape(resolve_links(text, ui),
                                                                                     quote=False)))
    return _LINK.sub(lambda m: f'<a href="{_html_target(m.group(2)).replace(chr(34), "%22")}">{m.group(1)}</a>', text)


def _html_target(url: str) -> str:
    """A link to a sibling Markdown page (``claims.md#...``) points at its HTML twin in the HTML page."""
    path, hash_, fragment = url.partition("#")
    if "://" not in path and path.endswith(".md"):
        return path[:-3] + ".html" + hash_ + fragment
    return url

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 75rem;
       padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .85rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: .25rem .5rem; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfcfd; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85em; background: #f2f4f6;
       padding: 0 .2em; border-radius: 3px; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { font-size: .8rem; color: #57606a; }
""".strip()


def to_html(doc: list[Block], images: dict[str, bytes], ui: str | None = None,
            title: str = "facebench leaderboard") -> str:
    """One self-contained page: inline CSS, figures as base64 data URIs, no scripts; the only links out are
    the run ids', to the MLflow UI (``ui``; none without it)."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>", f"<style>\n{CSS}\n</style>", "</head>", "<body>"]
    for block in doc:
        if isinstance(block, Heading):
            out.append(f'<h{block.level} id="{anchor(block.text)}">{_inline(block.text)}</h{block.level}>')
        elif isinstance(block, Para):
            out.append(f"<p>{_inline(block.text, ui)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i, ui)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            right = block.right or [False] * len(block.headers)
            out.append("<table>")
            out.append("<thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in block.headers) + "</tr></thead>")
            out.append("<tbody>")
            for row in block.rows:
                out.append("<tr>" + "".join(f'<td class="num">{_inline(c, ui)}</td>' if r
                                            else f"<td>{_inline(c, ui)}</td>" for c, r in zip(row, right)) + "</tr>")
            out.append("</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode(images[block.name]).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
