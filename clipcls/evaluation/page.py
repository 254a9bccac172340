"""The frame every evaluation page shares: its style (tables that fit a phone's width), the
heading with what the terminal warned of the models, the run's facts and the unreadable files."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from clipcls.evaluation.results import Setup
from clipcls.pathtext import path_to_text
from clipcls.version import __version__


def run_facts(what: str, source: Path, setups: Sequence[Setup], templates: str, word: str) -> str:
    """What a reader needs to reproduce the page: when, which clipcls, the dataset (`what`:
    its kind), models, prompts (as templates shows them) and each label's texts."""
    models = sorted({setup.model_id for setup in setups})
    texts = "".join(
        f"<li><b>{html.escape(label.name)}</b>: {html.escape(' | '.join(label.texts))}</li>"
        for label in setups[0].labels
    )
    when = time.strftime("%Y-%m-%d %H:%M:%S %z")
    return f"""<h2>Run</h2><table>
<tr><th>date</th><td>{when}</td></tr>
<tr><th>clipcls</th><td>{__version__}</td></tr>
<tr><th>{what}</th><td>{html.escape(path_to_text(str(source)))}</td></tr>
<tr><th>model and weights</th><td>{html.escape(", ".join(models))}</td></tr></table>
{templates}
<details><summary>Each {word}'s texts</summary><ul>{texts}</ul></details>"""


def failure_list(items: Iterable[tuple[str, str]]) -> str:
    """Each unreadable file with the reason."""
    shown = [
        f"<li>{html.escape(path_to_text(path))}: {html.escape(why)}</li>" for path, why in items
    ]
    return f"<ul>{''.join(shown)}</ul>" if shown else "<p>None.</p>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; max-width: 100%; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; overflow-wrap: anywhere; }
h1, h2, li, p { overflow-wrap: anywhere; }
@media (max-width: 600px) {  /* a phone: tables fit the width, never scroll the page sideways */
  body { margin: 1em 0.6em; }
  table { font-size: 13px; }
  td, th { padding: 3px 4px; }
}
.warning { background: #fff3cd; border: 1px solid #e0b84c; padding: 6px 10px; }
table.numbers td:not(:first-child), tr td { font-variant-numeric: tabular-nums; }
tr.best td { background: #eef6ee; font-weight: 600; }
.plots { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: 190px; font-size: 13px; }
figure img { max-width: 180px; max-height: 180px; display: block; }
small { color: #777; word-break: break-all; }
img.plot { max-width: 100%; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def model_warnings(setups: Sequence[Setup]) -> str:
    """What the terminal warned of the models (RANDOM weights), at the top of the page."""
    said = dict.fromkeys(notice for setup in setups for notice in setup.notices)
    return "".join(f'<p class="warning">warning: {html.escape(line)}</p>' for line in said)


def document(
    title: str, heading: str, counts: tuple[int, int], about: str, body: str, warned: str
) -> str:
    scored, failed = counts
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head><body>
<h1>{heading}</h1>{warned}
<p>{scored} images scored, {failed} unreadable,
{about}.</p>
{body}
</body></html>
"""
