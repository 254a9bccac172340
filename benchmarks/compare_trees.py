"""Two checkouts of clipcls side by side, each run its own process with PYTHONPATH set to its
tree, alternating old and new so that a machine's load moving hurts both alike.

Run: python benchmarks/compare_trees.py OLD_TREE [NEW_TREE] [--images 48] [--rounds 3]
       [--repeat 1] [--only TEXT] [--no-ray] [--inputs DIR]
     (OLD_TREE: e.g. `git worktree add /tmp/before <commit>`; NEW_TREE: this checkout)

1. The headline: whole-process `clipcls label` with a cold cache over speed.py's JPEGs and its
   random full-size ViT-B-32, `--rounds` times per tree; wall and CPU seconds (CPU moves less
   with other jobs on the machine), their medians and ratio new/old, whether the CSVs match.
2. Same behaviour: with a tiny random CLIP and SigLIP (tree_data.py; the models, calibrations
   and saved embeddings written by the old tree, so both read the same files), every scenario
   in tree_scenarios.py (label in each format with --support, --calibration, --multi-label;
   evaluate JSON incl. --shots and --multi-label; search, similar, dedupe; serve answers and
   its clients; label --engine ray, about a minute, left out by --no-ray) once per tree, or
   `--repeat` times for timing: a table of whether the outputs are byte-identical (Parquet: or
   the same schema and rows), wall and CPU old/new, then each difference or failure.
3. The Python line counts of each tree's clipcls/, per package.

Exit status 1 if any output differs or any run failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import make_images, make_model  # noqa: E402
from tree_data import make_inputs  # noqa: E402
from tree_report import Result, print_differences, print_line_counts, print_table  # noqa: E402
from tree_runs import Command, Scenario  # noqa: E402
from tree_scenarios import all_scenarios  # noqa: E402

LABELS = "cat,dog,rocket,coffee"
TREES = ("old", "new")


def run_both(
    scenario: Scenario, trees: dict[str, Path], work: Path, runs: int, first: int
) -> Result:
    """The scenario in each tree `runs` times, the order alternating (first: which tree starts),
    each run in work emptied, so that both trees see the same paths."""
    result = Result(scenario.name)
    for run in range(runs):
        order = TREES if (first + run) % 2 == 0 else TREES[::-1]
        for tree in order:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            outcome = scenario.run(trees[tree], work)
            result.walls[tree].append(outcome.wall)
            result.cpus[tree].append(outcome.cpu)
            result.files[tree] = outcome.files
            if outcome.error is not None:
                result.errors[tree] = outcome.error
    result.judge()
    return result


def headline(trees: dict[str, Path], images: int, rounds: int, scratch: Path) -> Result:
    """Cold whole-process `label` of speed.py's images with the random ViT-B-32."""
    folder = scratch / "images"
    folder.mkdir()
    for i, image in enumerate(make_images(images)):
        os.link(image, folder / f"{i:04d}-{image.parent.name}.jpg")
    args = ("label", str(folder), "--labels", LABELS, "--model", f"local-dir:{make_model()}")
    label = Command(f"label ViT-B-32, {images} JPEGs (headline)", (*args, "-o", "out.csv", "-q"),
                    ("out.csv",))  # fmt: skip
    result = run_both(label, trees, scratch / "work", rounds, first=0)
    for tree in TREES:
        walls, cpus = result.walls[tree], result.cpus[tree]
        each = ", ".join(f"{w:.1f}/{c:.1f}" for w, c in zip(walls, cpus, strict=True))
        print(f"{tree}: wall/CPU s per round {each}", flush=True)
    wall = {tree: statistics.median(result.walls[tree]) for tree in TREES}
    cpu = {tree: statistics.median(result.cpus[tree]) for tree in TREES}
    print(f"\n| median of {rounds} | old | new | new / old |\n| --- | ---: | ---: | ---: |")
    print(f"| wall s | {wall['old']:.1f} | {wall['new']:.1f} | {wall['new'] / wall['old']:.3f} |")
    print(f"| CPU s | {cpu['old']:.1f} | {cpu['new']:.1f} | {cpu['new'] / cpu['old']:.3f} |")
    print(f"\nsame CSV bytes: {result.identical}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path, nargs="?", default=Path(__file__).parents[1])
    parser.add_argument("--images", type=int, default=48, help="headline JPEGs")
    parser.add_argument("--rounds", type=int, default=3, help="headline runs per tree (0: none)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tree of each scenario")
    parser.add_argument("--only", default="", help="the scenarios whose name holds TEXT")
    parser.add_argument("--no-ray", dest="ray", action="store_false", help="skip the Ray runs")
    parser.add_argument("--inputs", type=Path, help="keep the tiny inputs in DIR (and reuse)")
    args = parser.parse_args()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    print(f"# old {trees['old']}\n# new {trees['new']}\n# {os.cpu_count()} cores", flush=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="clipcls-compare-") as scratch:
        if args.rounds:
            results.append(headline(trees, args.images, args.rounds, Path(scratch)))
        inputs = make_inputs(trees["old"], args.inputs or Path(scratch, "inputs"))
        scenarios = [s for s in all_scenarios(inputs, args.ray) if args.only in s.name]
        print(f"\n{len(scenarios)} scenarios, tiny models, inputs written by the old tree")
        for index, scenario in enumerate(scenarios):
            result = run_both(scenario, trees, Path(scratch, "work"), args.repeat, index)
            results.append(result)
            verdict = "identical" if result.identical else "FAILED" if result.errors else "DIFFERS"
            walls = " / ".join(f"{statistics.median(result.walls[t]):.1f}" for t in TREES)
            print(f"{scenario.name}: {verdict} (wall s old / new {walls})", flush=True)
    print_table(results)
    print_differences(results)
    print_line_counts(trees["old"], trees["new"])
    sys.exit(0 if all(result.identical for result in results) else 1)


if __name__ == "__main__":
    main()
