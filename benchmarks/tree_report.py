"""compare_trees.py's verdicts and tables: whether two outputs match (and where not), the
scenario table, and the Python line counts of each tree's clipcls/ per package."""

from __future__ import annotations

import io
import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SHOWN = 3  # differing lines shown
CONTEXT = 70  # characters either side of a line's first difference (embeddings are long lines)


@dataclass
class Result:
    """One scenario over both trees: seconds per run, each tree's outputs and failure."""

    name: str
    walls: dict[str, list[float]] = field(default_factory=lambda: {"old": [], "new": []})
    cpus: dict[str, list[float]] = field(default_factory=lambda: {"old": [], "new": []})
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)  # filled by judge()
    notes: list[str] = field(default_factory=list)  # how an identical output is identical

    @property
    def identical(self) -> bool:
        return not self.errors and not self.differences

    def judge(self) -> None:
        """Compare old's and new's outputs into differences and notes."""
        old, new = self.files.get("old", {}), self.files.get("new", {})
        self.differences = [f"{name}: only {tree} wrote it" for name, tree in only_one(old, new)]
        for name in sorted(old.keys() & new.keys()):
            same, detail = compare(name, old[name], new[name])
            if not same:
                self.differences.append(f"{name} differs:\n{detail}")
            elif detail:
                self.notes.append(f"{name}: {detail}")


def only_one(old: dict[str, bytes], new: dict[str, bytes]) -> list[tuple[str, str]]:
    return [(n, "old") for n in old.keys() - new.keys()] + [
        (n, "new") for n in new.keys() - old.keys()
    ]


def compare(name: str, old: bytes, new: bytes) -> tuple[bool, str]:
    """(same, detail): equal bytes; or a Parquet file with the same schema and rows (detail
    says the bytes differ); else detail says which lines differ and where."""
    if old == new:
        return True, ""
    if name.endswith(".parquet"):
        tables = [parquet_table(data) for data in (old, new)]
        if tables[0].equals(tables[1]):
            return True, "bytes differ, schema and rows identical"
        return False, describe(rows_as_lines(tables[0]), rows_as_lines(tables[1]))
    return False, describe(readable(old), readable(new))


def describe(old: list[str], new: list[str]) -> str:
    """How many lines differ, and the first few around their first differing character."""
    differing = [i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b]
    found = f"{len(differing)} of {len(old)} lines differ"
    if len(old) != len(new):
        found += f"; old has {len(old)} lines, new {len(new)}"
        differing.append(min(len(old), len(new)))  # the first line only one of them has
    for index in differing[:SHOWN]:
        a, b = (lines[index] if index < len(lines) else "" for lines in (old, new))
        column = next((c for c, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        column = min(len(a), len(b)) if column is None else column
        start = max(0, column - CONTEXT)
        found += f"\n  line {index + 1}, from column {column + 1}:"
        found += f"\n    old: {a[start : column + CONTEXT]}\n    new: {b[start : column + CONTEXT]}"
    return found


def parquet_table(data: bytes):  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data))


def rows_as_lines(table) -> list[str]:  # type: ignore[no-untyped-def]
    schema = [f"schema {column.name}: {column.type}" for column in table.schema]
    return schema + [json.dumps(row, default=str) for row in table.to_pylist()]


def readable(data: bytes) -> list[str]:
    """Text lines to diff; a one-line JSON document (a server's answer) indented first."""
    text = data.decode("utf-8", errors="replace")
    if "\n" not in text.strip():
        try:
            text = json.dumps(json.loads(text), indent=1)
        except ValueError:
            pass
    return text.splitlines()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(new: float, old: float) -> str:
    return f"{new / old:.3f}" if old > 0 else "-"


def print_table(results: list[Result]) -> None:
    print("\n| scenario | identical | wall old s | wall new s | new/old | CPU old s | CPU new s "
          "| new/old |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")  # fmt: skip
    for result in results:
        wall = [median(result.walls[tree]) for tree in ("old", "new")]
        cpu = [median(result.cpus[tree]) for tree in ("old", "new")]
        verdict = "yes" if result.identical else ("FAILED" if result.errors else "NO")
        print(
            f"| {result.name} | {verdict} | {wall[0]:.2f} | {wall[1]:.2f} | "
            f"{ratio(wall[1], wall[0])} | {cpu[0]:.2f} | {cpu[1]:.2f} | {ratio(cpu[1], cpu[0])} |"
        )
    sums = [sum(median(r.walls[t]) for r in results) for t in ("old", "new")]
    cpus = [sum(median(r.cpus[t]) for r in results) for t in ("old", "new")]
    same = sum(r.identical for r in results)
    print(
        f"| all {len(results)} ({same} identical) | | {sums[0]:.1f} | {sums[1]:.1f} | "
        f"{ratio(sums[1], sums[0])} | {cpus[0]:.1f} | {cpus[1]:.1f} | {ratio(cpus[1], cpus[0])} |"
    )


def print_differences(results: list[Result]) -> None:
    for result in results:
        for tree, error in result.errors.items():
            print(f"\n### {result.name}: {tree} tree failed\n{error}")
        for difference in result.differences:
            print(f"\n### {result.name}: {difference}")
        for note in result.notes:
            print(f"note: {result.name}: {note}")


def python_lines(tree: Path) -> Counter[str]:
    """Lines of clipcls/**/*.py by package (`clipcls/NAME/`; top-level modules together)."""
    root = tree / "clipcls"
    counts: Counter[str] = Counter()
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        package = f"clipcls/{parts[0]}/" if len(parts) > 1 else "clipcls/*.py"
        counts[package] += len(path.read_bytes().splitlines())
    return counts


def print_line_counts(old_tree: Path, new_tree: Path) -> None:
    old, new = python_lines(old_tree), python_lines(new_tree)
    print("\n| clipcls/ Python lines | old | new | new - old |\n| --- | ---: | ---: | ---: |")
    for package in sorted(old.keys() | new.keys()):
        print(f"| {package} | {old[package]} | {new[package]} | {new[package] - old[package]:+d} |")
    total_old, total_new = sum(old.values()), sum(new.values())
    print(f"| total | {total_old} | {total_new} | {total_new - total_old:+d} |")
