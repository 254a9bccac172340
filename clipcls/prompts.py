"""Prompt template sets: the built-in files in prompts/, user files, and single templates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from clipcls.errors import PromptFileError, UsageError
from clipcls.labels import prompt_text

DEFAULT_TEMPLATES = "openai"
PLACEHOLDER = "{}"


@dataclass(frozen=True)
class TemplateSet:
    """Named prompt templates, each holding exactly one `{}` for the label text."""

    name: str
    templates: tuple[str, ...]
    description: str = ""

    def __post_init__(self) -> None:
        # As a label's texts: read as the tokenizer reads them, so every path embeds the same.
        object.__setattr__(self, "templates", tuple(map(prompt_text, self.templates)))

    def fill(self, text: str) -> list[str]:
        """Put one label text into every template."""
        # replace(), not format(): templates may hold other braces or quotes.
        return [template.replace(PLACEHOLDER, text) for template in self.templates]


def builtin_dir() -> Path:
    """The folder holding the built-in template files."""
    installed = Path(str(resources.files("clipcls"))) / "prompts"
    if installed.is_dir():
        return installed
    # Running from a source checkout without installing: prompts/ sits beside clipcls/.
    return Path(__file__).resolve().parent.parent / "prompts"


def check_template(template: str, where: str) -> str:
    """Return the template if it holds exactly one `{}`."""
    count = template.count(PLACEHOLDER)
    if count != 1:
        problem = "has no {} placeholder" if count == 0 else f"has {count} {{}} placeholders"
        raise PromptFileError(f"{where}: template {template!r} {problem}; it needs exactly one")
    return template


def parse_template_file(path: Path, name: str) -> TemplateSet:
    """Read one template per line; `#` lines are comments, the first one describes the set."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PromptFileError(f"cannot read template file {path}: {error}") from None
    templates: list[str] = []
    description = ""
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if line.startswith("#"):
            if not templates and not description:
                description = line.lstrip("# ")
        elif line:
            templates.append(check_template(line, f"{path}:{number}"))
    if not templates:
        raise PromptFileError(f"template file {path} has no templates")
    return TemplateSet(name, tuple(templates), description)


def list_template_sets() -> list[TemplateSet]:
    """All built-in template sets, sorted by name."""
    files = sorted(builtin_dir().glob("*.txt"))
    return [parse_template_file(path, path.stem) for path in files]


def load_templates(name_or_path: str) -> TemplateSet:
    """Load a template set by built-in name or by file path."""
    path = Path(name_or_path)
    if path.is_file():
        return parse_template_file(path, str(path))
    builtin = builtin_dir() / f"{name_or_path}.txt"
    if PLACEHOLDER not in name_or_path and "/" not in name_or_path and builtin.is_file():
        return parse_template_file(builtin, name_or_path)
    names = ", ".join(sorted(p.stem for p in builtin_dir().glob("*.txt")))
    raise UsageError(
        f"unknown template set {name_or_path!r}: not a file, and the built-in sets are {names}"
    )


def single_templates(templates: Sequence[str]) -> TemplateSet:
    """A set made of templates given one by one on the command line."""
    checked = tuple(check_template(t, f"--template {t!r}") for t in templates)
    return TemplateSet("custom", checked)
