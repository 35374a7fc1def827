"""Markdown from results, and the one place that writes it into docs/.

A generated block in docs/ sits between `<!-- docs.py ID -->` and
`<!-- /docs.py -->`; ID is an entry of benchmarks/docs.py (`--list` names
the command behind each), and `write_block` is how every script replaces
one. Standard library only.
"""

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
BEGIN, END = "<!-- docs.py {} -->", "<!-- /docs.py -->"


def write_block(doc, name, markdown, append=False):
    """Replace the block `name` of `doc` (a path, or a name in docs/) with
    `markdown`, kept as given (blank lines included); with `append`, add the
    block at the end of a doc that lacks it."""
    path = Path(doc) if Path(doc).is_absolute() or Path(doc).parent != Path(".") else DOCS / doc
    text = path.read_text() if path.exists() else ""
    body = BEGIN.format(name) + "\n" + markdown + ("" if markdown.endswith("\n") else "\n") + END
    pattern = re.compile(rf"{re.escape(BEGIN.format(name))}\n.*?{re.escape(END)}", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: body, text, count=1)
    elif append:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + body + "\n"
    else:
        sys.exit(f"{path} has no block `{BEGIN.format(name)}` ... `{END}`")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def number(x, digits=None):
    if x is None:
        return "–"
    if digits is None:
        digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:,.{digits}f}"


def rate(r):
    return "failed" if r is None or "error" in r else number(r["images_per_s"])


def ratio(a, b):
    ok = a and b and "error" not in a and "error" not in b
    return f"{a['images_per_s'] / b['images_per_s']:.2f}×" if ok else "–"


def table(header, rows, text=1):
    """A Markdown table: the first `text` columns left-aligned, the figures right."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < text else "---:" for i in range(len(header)))
             + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def failures(*results):
    """Footnotes for the configurations that failed, with their error."""
    notes = [f"- {label}: {r['error']}" for label, r in results if r and "error" in r]
    return ("\n\nFailed or skipped:\n\n" + "\n".join(notes)) if notes else ""
