"""Files written whole by rename (a review export, a run's setup record) are first written under
a temporary name beside their target: a name another user of a shared folder can guess (the
process id) must not let a link planted there redirect the write onto their chosen file."""

from __future__ import annotations

import os
from pathlib import Path

from review_helpers import label_output
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.fewshot.calibration import Calibration, read_calibration
from clipcls.labeling.manifest import sidecar
from clipcls.review.export import export_corrected
from clipcls.review.log import ReviewLog
from clipcls.review.table import load_review

PRECIOUS = "someone's data\n"


def plant(target: Path, victim: Path) -> list[Path]:
    """Links at the temporary names a write to target could take (pid-named, or fixed)."""
    victim.write_text(PRECIOUS)
    links = [
        target.with_name(f".{target.name}.{os.getpid()}.tmp"),
        target.with_name(f".{target.name}.tmp"),
    ]
    for link in links:
        link.symlink_to(victim)
    return links


def test_an_export_never_writes_through_a_link_planted_at_its_temporary_name(
    tmp_path: Path, tiny_model: str
) -> None:
    output = label_output(tmp_path / "run", tiny_model)
    table = load_review(output)
    target = output.with_name("out.corrected.csv")
    victim = tmp_path / "victim.txt"
    links = plant(target, victim)
    with ReviewLog.open(table) as log:
        assert export_corrected(table, log.current(), target) == len(table.rows)
    assert victim.read_text() == PRECIOUS
    assert not target.is_symlink() and target.read_text().startswith("path,label,")
    assert all(link.is_symlink() for link in links)  # not ours: left where they are


def test_a_setup_record_never_writes_through_a_link_planted_at_its_temporary_name(
    tmp_path: Path, tiny_model: str
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(
        (Path(__file__).parent.parent / "sample_images" / "coffee.png").read_bytes()
    )
    output = tmp_path / "out.csv"
    victim = tmp_path / "victim.txt"
    plant(sidecar(output), victim)
    args = ["label", str(photos), "--labels", "cat,cup", "-m", tiny_model, "-o", str(output)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert victim.read_text() == PRECIOUS
    assert not sidecar(output).is_symlink() and '"record"' in sidecar(output).read_text()


def test_a_calibration_file_never_writes_through_a_link_planted_at_its_temporary_name(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cal.json"
    victim = tmp_path / "victim.txt"
    plant(path, victim)
    Calibration("m", ("a", "b"), "t", 1.0).write(path)
    assert victim.read_text() == PRECIOUS
    assert read_calibration(path).labels == ("a", "b")
