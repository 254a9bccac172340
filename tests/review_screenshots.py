"""Screenshots of the review page for the docs, narrow (420 px) and wide (1400 px) windows.

Run: python tests/review_screenshots.py [docs/images]   (needs playwright and /usr/bin/chromium)

The sample photos plus a file named like an HTML tag and one deleted after labeling, labeled by a
tiny random-weight model (--top-k 2, sorted into folders), two decisions made by keys.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import SAMPLE_IMAGES, write_tiny_model  # noqa: E402
from review_helpers import XSS, running  # noqa: E402
from test_review_browser import wait_until  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from clipcls.cli import app  # noqa: E402

LABELS = "cat,coffee,rocket,person,flower,coins"


def demo_output(root: Path) -> Path:
    photos = root / "photos"
    photos.mkdir()
    for source in sorted(SAMPLE_IMAGES.glob("*.*")):
        if source.suffix in (".jpg", ".png"):
            (photos / source.name).write_bytes(source.read_bytes())
    (photos / XSS).write_bytes((SAMPLE_IMAGES / "rocket.jpg").read_bytes())
    (photos / "deleted.jpg").write_bytes((SAMPLE_IMAGES / "coffee.png").read_bytes())
    model = write_tiny_model(root / "model")
    output = root / "labels.csv"
    args = ["label", "photos", "--labels", LABELS, "--model", f"local-dir:{model}"]
    args += ["--top-k", "2", "-o", str(output), "--sort-into", "sorted"]
    os.chdir(root)  # relative paths, as a user types them
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    (photos / "deleted.jpg").unlink()
    return output


def main() -> None:
    from playwright.sync_api import sync_playwright

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images").resolve()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        os.environ["CLIPCLS_CACHE_DIR"] = str(root / "cache")
        output = demo_output(root)
        with running(output, root / "thumbs") as served, sync_playwright() as play:
            args = ["--no-sandbox"] if os.geteuid() == 0 else []
            browser = play.chromium.launch(executable_path="/usr/bin/chromium", args=args)
            for width, height, name in ((1400, 900, "wide"), (420, 900, "narrow")):
                tab = browser.new_page(viewport={"width": width, "height": height})
                tab.goto(served.server.url)
                tab.wait_for_selector("body[data-ready='1']")
                if name == "wide":
                    for key in ("2", "ArrowRight", "Enter"):
                        tab.keyboard.press(key)
                        tab.wait_for_timeout(150)
                wait_until(  # not wait_for_function: its polling evals, which the CSP forbids
                    tab,
                    "() => [...document.querySelectorAll('.tile img')].slice(0, 8)"
                    ".every(i => i.complete && i.naturalWidth > 0)",
                )
                tab.screenshot(path=str(target / f"review-{name}.png"))
                print(target / f"review-{name}.png")
            browser.close()


if __name__ == "__main__":
    main()
