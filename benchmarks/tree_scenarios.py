"""What compare_trees.py asks both checkouts to do with the tiny models: label in every format
with and without a support set, a calibration and multi-label; evaluate; search, similar and
dedupe; serve; label on Ray. Each scenario names the files whose bytes must match."""

from __future__ import annotations

from pathlib import Path

from tree_data import CALIBRATIONS, LABELS, Inputs
from tree_runs import Command, Scenario, Serve, images_body

FORMATS = ("csv", "jsonl", "parquet")
QUERY = "a cat + coffee - rocket"


def label_variants(name: str, inputs: Inputs) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(variant, formats, options): the plain run and the three flags alone in every format,
    combinations in JSONL."""
    calibration = {kind: str(inputs.calibrations[f"{name}-{kind}"]) for kind in CALIBRATIONS}
    support = ("--support", str(inputs.support))
    auto = ("--threshold", "auto")
    top2 = ("--top-k", "2")
    return [
        ("plain", FORMATS, top2),
        ("support", FORMATS, (*top2, *support)),
        ("calibration", FORMATS, (*top2, "--calibration", calibration["plain"], *auto)),
        ("multi-label", FORMATS, ("--multi-label",)),
        (
            "support+calibration",
            ("jsonl",),
            (*support, "--calibration", calibration["support"], *auto),
        ),
        (
            "multi-label+calibration",
            ("jsonl",),
            ("--multi-label", "--calibration", calibration["multi"], *auto),
        ),
        ("multi-label --threshold 0.3", ("jsonl",), ("--multi-label", "--threshold", "0.3")),
        ("save-embeddings", ("jsonl", "parquet"), (*top2, "--save-embeddings")),
    ]


def label_scenarios(name: str, model: str, inputs: Inputs) -> list[Scenario]:
    base = ("label", str(inputs.dataset), "--labels", LABELS, "--model", model, "-q")
    found: list[Scenario] = []
    for variant, formats, options in label_variants(name, inputs):
        for fmt in formats:
            output = f"out.{fmt}"
            command = (*base, *options, "-o", output)
            found.append(Command(f"label {name} {fmt} {variant}", command, (output,)))
    return found


def evaluate_scenarios(name: str, model: str, inputs: Inputs) -> list[Scenario]:
    base = ("evaluate", "--model", model, "-q", "-f", "json", "-o", "report.json")
    dataset, support = str(inputs.dataset), str(inputs.support)
    runs = {
        "": ((dataset, "-k", "1", "-k", "2", "--predictions", "p.csv"), ("p.csv",)),
        "support+calibrate": (
            (dataset, "--support", support, "--calibrate", "c.json"),
            ("c.json",),
        ),
        "shots": ((dataset, "--shots", "2", "--folds", "2"), ()),
        "multi-label": (
            (
                "--multi-label",
                str(inputs.multi_csv),
                "--calibrate",
                "c.json",
                "--predictions",
                "p.csv",
            ),
            ("c.json", "p.csv"),
        ),  # fmt: skip
    }
    return [
        Command(f"evaluate {name} {what}".rstrip(), (*base, *args), ("report.json", *extra))
        for what, (args, extra) in runs.items()
    ]


def search_scenarios(name: str, model: str, inputs: Inputs) -> list[Scenario]:
    dataset, query_image = str(inputs.dataset), str(inputs.support / "cat" / "00.jpg")
    common = ("--model", model, "-q", "-f", "jsonl", "-o", "out.jsonl")
    runs = {
        "search": ("search", dataset, QUERY, "--image", query_image, "-k", "6"),
        "similar": ("similar", str(inputs.dataset / "cat" / "00.jpg"), dataset, "-k", "6"),
        "dedupe": ("dedupe", dataset, "--threshold", "0.9"),
    }
    return [
        Command(f"{what} {name}", (*args, *common), ("out.jsonl",)) for what, args in runs.items()
    ]


def serve_scenarios(inputs: Inputs) -> list[Scenario]:
    """CLIP served plainly (a top-3 answer with embeddings, a multi-label answer, the predict
    and search clients); SigLIP served with a support set (an answer, the predict client)."""
    pictures = [inputs.dataset / "cat" / "00.jpg", inputs.dataset / "rocket" / "01.jpg"]
    top3 = images_body(pictures, labels=LABELS, top_k=3, embedding=True)
    multi = images_body(pictures, labels=LABELS, multi_label=True)
    cats = str(inputs.dataset / "cat")
    predict = ("predict", cats, "--labels", LABELS, "-k", "3", "-f", "jsonl", "-q")
    search = ("search", str(inputs.dataset), QUERY, "-k", "6", "-f", "jsonl", "-q")
    clip, siglip = inputs.models["clip"], inputs.models["siglip"]
    allow = ("--allow-dir", str(inputs.dataset.parent))
    support = ("--support", str(inputs.support))
    return [
        Serve(
            "serve clip",
            ("--model", clip, *allow),
            {"answer.json": top3, "multi.json": multi},
            {"predict.jsonl": predict, "search.jsonl": search},
        ),
        Serve(
            "serve siglip --support",
            ("--model", siglip, *allow, *support),
            {"answer.json": images_body(pictures, labels=LABELS, top_k=3)},
            {"predict.jsonl": (*predict, *support)},
        ),
    ]


def all_scenarios(inputs: Inputs, ray: bool) -> list[Scenario]:
    found: list[Scenario] = []
    for name, model in inputs.models.items():
        found += label_scenarios(name, model, inputs)
        found.append(from_embeddings(name, model, inputs))
        found += evaluate_scenarios(name, model, inputs)
        found += search_scenarios(name, model, inputs)
    found += serve_scenarios(inputs)
    if ray:
        clip = inputs.models["clip"]
        args = ("label", str(inputs.dataset), "--labels", LABELS, "--model", clip, "-q")
        for what, options in {"": (), " --support": ("--support", str(inputs.support))}.items():
            command = (*args, "--top-k", "2", *options, "--engine", "ray", "-o", "out.jsonl")
            found.append(Command(f"label clip jsonl --engine ray{what}", command, ("out.jsonl",)))
    return found


def from_embeddings(name: str, model: str, inputs: Inputs) -> Scenario:
    """New labels scored from the embeddings the old tree saved; no image read."""
    saved: Path = inputs.saved[name]
    args = ("label", "--from-embeddings", str(saved), "--labels", "dog,car,cat", "--model", model)
    return Command(
        f"label {name} csv --from-embeddings", (*args, "-q", "-o", "out.csv"), ("out.csv",)
    )
