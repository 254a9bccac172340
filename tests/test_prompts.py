"""Template sets: the built-in files, user files, and the `{}` rule."""

from pathlib import Path

import pytest

from clipcls.errors import PromptFileError, UsageError
from clipcls.prompts import list_template_sets, load_templates, single_templates


def test_builtin_sets_exist_with_the_documented_sizes() -> None:
    sizes = {s.name: len(s.templates) for s in list_template_sets()}
    assert sizes["openai"] == 80
    assert sizes["simple"] == 7
    assert sizes["photo"] == 1
    for domain in ("satellite", "aerial", "histology", "texture"):
        assert sizes[domain] >= 1


def test_openai_and_simple_sets_equal_open_clips_own_lists() -> None:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    openai = load_templates("openai")
    assert openai.fill("cat") == [t("cat") for t in OPENAI_IMAGENET_TEMPLATES]
    simple = load_templates("simple")
    assert simple.fill("cat") == [t("cat") for t in SIMPLE_IMAGENET_TEMPLATES]


def test_every_builtin_template_has_one_placeholder() -> None:
    for template_set in list_template_sets():
        assert template_set.description, template_set.name
        for template in template_set.templates:
            assert template.count("{}") == 1, (template_set.name, template)


def test_template_file_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("# my set\nan x-ray of {}.\n\na {} in {braces}? no: only {} once\n")
    with pytest.raises(PromptFileError, match=r"mine.txt:4: .* has 2 \{\} placeholders"):
        load_templates(str(path))
    path.write_text("# my set\nan x-ray of {}.\n\na scan showing {}\n")
    loaded = load_templates(str(path))
    assert loaded.templates == ("an x-ray of {}.", "a scan showing {}")
    assert loaded.fill("a {fracture}") == [
        "an x-ray of a {fracture}.",
        "a scan showing a {fracture}",
    ]


def test_template_file_line_without_placeholder_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.txt"
    path.write_text("a photo of a {}.\n# comment\na photo\n")
    with pytest.raises(PromptFileError, match=r"broken.txt:3: template 'a photo' has no \{\}"):
        load_templates(str(path))


def test_unknown_set_lists_the_builtin_names() -> None:
    with pytest.raises(UsageError, match="unknown template set 'nope'.*openai.*simple"):
        load_templates("nope")


def test_single_templates_are_checked() -> None:
    assert single_templates(["a photo of a {}."]).templates == ("a photo of a {}.",)
    with pytest.raises(UsageError, match="no {} placeholder"):
        single_templates(["a photo"])


def test_templates_ship_inside_the_installed_package() -> None:
    import clipcls

    package = Path(clipcls.__file__).resolve().parent
    if (package.parent / "pyproject.toml").is_file():
        pytest.skip("clipcls is imported from the source tree, not from an installed package")
    assert (package / "prompts" / "openai.txt").is_file()
    # and the sample photos, which the ONNX export's parity gate runs on, with their licenses
    assert (package / "sample_images" / "chelsea.png").is_file()
    assert (package / "sample_images" / "SOURCES.md").is_file()
    assert load_templates("openai").templates[0] == "a bad photo of a {}."
