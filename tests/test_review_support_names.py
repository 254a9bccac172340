"""review --export-support with hostile names: `[/b]` in paths and labels, CR and LF, bytes
that are not UTF-8, 255-byte names, NFD text. The links land under safe names, each leading to
its image; nothing is read as Rich markup; exporting again adds nothing."""

import os
import unicodedata
from pathlib import Path

from conftest import SAMPLE_IMAGES
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.fewshot.support import find_support
from clipcls.labels import Label
from clipcls.review.log import ReviewLog
from clipcls.review.table import load_review

LABELS = ("cat", "café", "[/b]dog")
NAMES = [
    b"[/b]x.png",  # a folder `[` and a file `b]x.png`: the path holds the closing tag
    b"[bold red]y[b]z[i].png",
    b"cr\rname.png",
    b"lf\nname.png",
    b"esc\x1b[31mred.png",
    b"bad\xff.png",
    b"a" * 251 + b".png",  # 255 bytes, and another that differs only in its last bytes
    b"a" * 250 + b"b.png",
    unicodedata.normalize("NFD", "café.png").encode(),
    "café.png".encode(),
    b".hidden.png",
]


def hostile_photos(folder: Path) -> list[Path]:
    (folder / "[").mkdir(parents=True)
    sources = ("chelsea.png", "coffee.png", "rocket.jpg")
    paths = []
    for i, name in enumerate(NAMES):
        path = folder / os.fsdecode(name)
        path.write_bytes((SAMPLE_IMAGES / sources[i % 3]).read_bytes())
        paths.append(path)
    return paths


def links(folder: Path) -> dict[str, str]:
    """Every link under folder (relative name) and the file it leads to."""
    return {
        str(link.relative_to(folder)): os.path.realpath(link)
        for link in folder.rglob("*")
        if link.is_symlink()
    }


def test_support_links_get_safe_names_and_a_second_export_adds_none(
    tiny_model: str, tmp_path: Path
) -> None:
    photos = hostile_photos(tmp_path / "photos")
    out = tmp_path / "out.csv"
    args = ["label", str(tmp_path / "photos"), "-l", ",".join(LABELS), "--model", tiny_model]
    done = CliRunner().invoke(app, [*args, "-o", str(out), "--include-hidden"])
    assert done.exit_code == 0, done.output
    table = load_review(out)
    with ReviewLog.open(table) as log:
        for row in table.rows:  # accept a third, and set the rest to cat, café or [/b]dog
            if row.index % 4 == 0:
                log.decide(row.index, "", "accept")
            else:
                log.decide(row.index, LABELS[row.index % 3], "set")
        decisions = log.current()
    support = tmp_path / "support"
    exported = CliRunner().invoke(app, ["review", str(out), "--export-support", str(support)])
    assert exported.exit_code == 0, exported.output
    assert "warning: label '[/b]dog' cannot name a support folder: left out" in exported.stderr
    found = links(support)
    wanted = {
        os.path.realpath(table.file_path(i))
        for i, decision in decisions.items()
        if (decision.label or table.rows[i].label) != "[/b]dog"
    }
    assert sorted(found.values()) == sorted(wanted) and len(wanted) >= 6
    for name in found:
        leaf = os.path.basename(name)
        assert not any(ord(c) < 32 or 0xDC80 <= ord(c) <= 0xDCFF for c in name), repr(name)
        assert len(os.fsencode(leaf)) <= 255 and not leaf.startswith(".")
    again = CliRunner().invoke(app, ["review", str(out), "--export-support", str(support)])
    assert again.exit_code == 0 and links(support) == found
    usable = find_support(support, [Label.plain(name) for name in LABELS[:2]])
    assert len(usable.paths) == len(found)
    assert all(path.is_file() for path in photos)  # links made, nothing moved
