"""Two checkouts side by side: `clipcls evaluate` in 58 cases, every output compared byte for byte.

Run: python benchmarks/compare_evaluate.py OLD_TREE [NEW_TREE]
     (OLD_TREE: e.g. `git worktree add /tmp/before <commit>`; NEW_TREE: this checkout)

The cases: class folders (JSON and tables, template sets, two models, --classnames,
--max-per-class, -k), --shots folds, --support, --calibrate, --report and --predictions, a
biased CLIP; --multi-label with a CLIP (background head), a biased CLIP and a SigLIP (sigmoid),
--calibrate, --labels, the files; and the refusals of options that do not go together. Each
tree runs them all in one process (CliRunner) on the same fixtures, work folder and a cache
cleared first: exit code, stdout, stderr and every file written, the HTML page's date left out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"
MODELS = {  # name: (architecture, seed, config overrides)
    "tiny": ("ViT-B-32", 0, {}),
    "tiny2": ("ViT-B-32", 3, {}),
    "biased": ("ViT-B-32", 1, {"init_logit_bias": -2.5, "quick_gelu": True}),
    "siglip": ("ViT-B-16-SigLIP2", 2, {}),
}
CLASSES = {
    "cat": ["chelsea.png", "astronaut.png", "camera.png"],
    "coffee": ["coffee.png", "coins.png", "flower.jpg"],
    "rocket": ["rocket.jpg", "hubble_deep_field.jpg", "china.jpg"],
    "person_face": ["grace_hopper.jpg", "ihc.png", "retina.jpg"],
}
SUPPORT = {"cat": ["chelsea.png"], "coffee": ["flower.jpg"], "rocket": ["coins.png", "rocket.jpg"]}
TRUTH = {  # the labels CSV: image -> labels
    "chelsea.png": "animal;indoor",
    "astronaut.png": "person;sky",
    "rocket.jpg": "sky;machine",
    "coffee.png": "indoor",
    "grace_hopper.jpg": "person;indoor",
    "hubble_deep_field.jpg": "sky",
    "camera.png": "machine;person",
    "coins.png": "indoor",
}
DATE = re.compile(r"<tr><th>date</th><td>[^<]*</td></tr>")


def make_fixtures(root: Path) -> None:
    """The tiny random models, class folders (one unreadable file), a support folder, a labels
    CSV (one unreadable file) and a classnames file, under root."""
    from clipcls.engine.random_model import CONFIG_FILE, RANDOM_MARKER, write_random_model

    for name, (arch, seed, overrides) in MODELS.items():
        write_random_model(root / name, arch, seed=seed, tiny=True, **overrides)
        config_file = root / name / CONFIG_FILE  # a user's own checkpoint: no random notice
        config = json.loads(config_file.read_text())
        config.pop(RANDOM_MARKER, None)
        config_file.write_text(json.dumps(config, indent=2) + "\n")
    for folder, images in (("data", CLASSES), ("support", SUPPORT)):
        for name, files in images.items():
            (root / folder / name).mkdir(parents=True)
            for file in files:
                shutil.copy(SAMPLES / file, root / folder / name / file)
    (root / "data" / "cat" / "broken.png").write_bytes(b"not an image")
    (root / "ml").mkdir()
    for file in TRUTH:
        shutil.copy(SAMPLES / file, root / "ml" / file)
    (root / "ml" / "broken.png").write_bytes(b"nope")
    rows = [
        "path,labels",
        *(f"{file},{labels}" for file, labels in TRUTH.items()),
        "broken.png,sky",
    ]
    (root / "ml" / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "names.txt").write_text("cat: cat | kitten\nperson_face: a face\n")


def cases(fx: Path, work: Path) -> dict[str, list[str]]:
    """Each case's `clipcls evaluate` arguments."""
    tiny, tiny2, biased, siglip = (f"local-dir:{fx / name}" for name in MODELS)
    d, s, ml, w = str(fx / "data"), str(fx / "support"), str(fx / "ml" / "labels.csv"), work
    m, m2, p = ["-m", tiny], ["-m", tiny2], ["--precision", "fp32"]
    cal, files = ["--calibrate", f"{w}/cal.json"], ["--predictions", f"{w}/p.csv"]
    page = ["--report", f"{w}/out/"]
    return {
        "table": [d, *m, *p],
        "json": [d, *m, *p, "-f", "json"],
        "json_topk": [d, *m, *p, "-f", "json", "-k", "2", "-k", "3"],
        "table_sets": [d, *m, *p, "-t", "simple", "-t", "photo", "--template", "a {}"],
        "json_sets": [d, *m, *p, "-t", "simple", "-t", "photo", "-f", "json"],
        "json_models": [d, *m, *m2, *p, "-f", "json"],
        "table_models": [d, *m, *m2, *p],
        "classnames": [d, *m, *p, "--classnames", str(fx / "names.txt"), "-f", "json"],
        "maxper": [d, *m, *p, "--max-per-class", "2", "--seed", "3", "-f", "json"],
        "shots_json": [d, *m, *p, "--shots", "1", "--folds", "3", "-f", "json"],
        "shots_table": [d, *m, *p, "--shots", "2", "--folds", "2"],
        "shots_many": [d, *m, *p, "--shots", "1", "--folds", "12"],
        "shots_sets": [d, *m, *p, "--shots", "1", "-t", "simple", "-t", "photo"],
        "support_json": [d, *m, *p, "--support", s, "-f", "json"],
        "support_table": [d, *m, *p, "--support", s],
        "calibrate": [d, *m, *p, *cal, "-f", "json"],
        "calibrate_support": [d, *m, *p, "--support", s, *cal, "--target-precision", "0.5"],
        "files": [d, *m, *p, *files, *page, "-o", f"{w}/r.json"],
        "files_shots": [d, *m, *m2, *p, "--shots", "1", *files, "--report", f"{w}/page.html"],
        "files_cal": [d, *m, *p, "--support", s, *cal, *page],
        "strict": [d, *m, *p, "--strict", "-q"],
        "biased": [d, "-m", biased, *p, "-f", "json"],
        "ml_table": ["--multi-label", ml, *m, *p],
        "ml_json": ["--multi-label", ml, *m, *p, "-f", "json"],
        "ml_sig_json": ["--multi-label", ml, "-m", siglip, *p, "-f", "json"],
        "ml_sig_table": ["--multi-label", ml, "-m", siglip, *p, "--threshold", "0.001"],
        "ml_biased": ["--multi-label", ml, "-m", biased, *p, "-f", "json"],
        "ml_labels": [
            "--multi-label",
            ml,
            *m,
            *p,
            "--labels",
            "sky,person,indoor,machine,animal,boat",
        ],
        "ml_cal": ["--multi-label", ml, *m, *p, *cal, "-f", "json"],
        "ml_cal_table": ["--multi-label", ml, *m, *p, *cal, "--target-precision", "0.6"],
        "ml_sig_cal": ["--multi-label", ml, "-m", siglip, *p, *cal],
        "ml_files": ["--multi-label", ml, *m, *p, *files, *page, "-o", f"{w}/r.json"],
        "ml_files_cal": ["--multi-label", ml, "-m", siglip, *p, *cal, *page, *files],
        "ml_strict": ["--multi-label", ml, *m, *p, "--strict", "-q", "-f", "json"],
        "err_ml_shots": ["--multi-label", ml, "--shots", "2"],
        "err_ml_data": [d, "--multi-label", ml],
        "err_threshold": [d, "--threshold", "0.3"],
        "err_labels": [d, "--labels", "a,b"],
        "err_nothing": [],
        "err_ml_two_models": ["--multi-label", ml, *m, *m2],
        "err_ml_two_sets": ["--multi-label", ml, "-t", "simple", "-t", "photo"],
        "err_ml_both_labels": ["--multi-label", ml, "--labels", "a", "--labels-file", ml],
        "err_ml_tp": ["--multi-label", ml, "--target-precision", "0.5"],
        "err_ml_tp_range": ["--multi-label", ml, "--target-precision", "1.5", *cal],
        "err_ml_support": ["--multi-label", ml, "--support", s],
        "err_shots_support": [d, "--shots", "1", "--support", s],
        "err_folds": [d, "--folds", "3"],
        "err_cal_shots": [d, "--shots", "1", *cal],
        "err_cal_two": [d, "-t", "simple", "-t", "photo", *cal],
        "err_tp": [d, "--target-precision", "0.5"],
        "err_same_files": [d, "-o", f"{w}/x.json", "--predictions", f"{w}/x.json"],
        "err_ml_same_files": [
            "--multi-label",
            ml,
            "-o",
            f"{w}/x.json",
            "--calibrate",
            f"{w}/x.json",
        ],
        "err_emb_models": [d, "--from-embeddings", ml, "-m", "a", "-m", "b"],
        "err_server_ray": [d, "--server", "http://127.0.0.1:9", "--engine", "ray"],
        "err_support_stray": [d, "--support", str(fx / "ml")],
        "err_missing_csv": ["--multi-label", str(fx / "nope.csv")],
        "err_ml_unknown_label": ["--multi-label", ml, "--labels", "sky"],
        "err_dataset_missing": [str(fx / "nope")],
    }


def run_cases(fx: Path, out: Path, work: Path) -> None:
    """Every case in this process (the tree on PYTHONPATH), its outputs under out/<case>/."""
    from typer.testing import CliRunner

    from clipcls.cli import app

    for name, args in cases(fx, work).items():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        result = CliRunner().invoke(app, ["evaluate", *args])
        target = out / name
        (target / "files").mkdir(parents=True)
        (target / "exit").write_text(f"{result.exit_code}\n{result.exception!r}\n")
        (target / "stdout").write_text(result.stdout)
        (target / "stderr").write_text(result.stderr)
        for path in sorted(p for p in work.rglob("*") if p.is_file()):
            data = path.read_bytes()
            if path.suffix == ".html":
                data = DATE.sub("<date>", data.decode()).encode()
            copy = target / "files" / path.relative_to(work)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(data)


def differing(old: Path, new: Path) -> dict[str, list[str]]:
    """Per case, the outputs that are not the same bytes in both (or only in one)."""
    found = {}
    for case in sorted(p.name for p in old.iterdir()):
        files = {p.relative_to(old / case) for p in (old / case).rglob("*") if p.is_file()}
        files |= {p.relative_to(new / case) for p in (new / case).rglob("*") if p.is_file()}
        bad = [
            str(f)
            for f in sorted(files)
            if not ((old / case / f).is_file() and (new / case / f).is_file())
            or (old / case / f).read_bytes() != (new / case / f).read_bytes()
        ]
        if bad:
            found[case] = bad
    return found


def main() -> None:
    if sys.argv[1:2] == ["--fixtures"]:  # made by the new tree, in its own process: ROOT
        make_fixtures(Path(sys.argv[2]))
        return
    if sys.argv[1:2] == ["--cases"]:  # one tree's run, in its own process: FIXTURES OUT WORK
        run_cases(*map(Path, sys.argv[2:5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path, nargs="?", default=Path(__file__).parents[1])
    args = parser.parse_args()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    with tempfile.TemporaryDirectory(prefix="clipcls-evaluate-") as scratch:
        root = Path(scratch)
        env = {**os.environ, "PYTHONPATH": str(trees["new"]), "COLUMNS": "120"}
        command = [sys.executable, __file__, "--fixtures", str(root / "fx")]
        subprocess.run(command, check=True, env=env)
        for name, tree in trees.items():
            env |= {"PYTHONPATH": str(tree), "CLIPCLS_CACHE_DIR": str(root / "cache")}
            shutil.rmtree(root / "cache", ignore_errors=True)
            command = [sys.executable, __file__, "--cases", "fx", name, str(root / "work")]
            subprocess.run(command, check=True, env=env, cwd=root, stderr=subprocess.DEVNULL)
        found = differing(root / "old", root / "new")
        total = len(cases(Path("fx"), root / "work"))
        print(f"{total - len(found)} of {total} cases wrote the same bytes in both trees")
        for case, files in found.items():
            print(f"  {case}: {', '.join(files)} differ")


if __name__ == "__main__":
    main()
