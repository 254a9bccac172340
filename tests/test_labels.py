"""Labels from --labels and labels files: names, aliases, comments and the usage errors."""

from pathlib import Path

import pytest

from clipcls.errors import PromptFileError, UsageError
from clipcls.labels import Label, parse_labels, read_labels_file


def test_comma_list_is_trimmed_and_keeps_order() -> None:
    assert parse_labels(" cat, dog ,sports car ") == (
        Label("cat", ("cat",)),
        Label("dog", ("dog",)),
        Label("sports car", ("sports car",)),
    )


@pytest.mark.parametrize("text", ["cat,,dog", "cat,dog,", " , cat", ""])
def test_empty_label_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="empty label"):
        parse_labels(text)


def test_duplicate_label_is_a_usage_error_ignoring_case() -> None:
    with pytest.raises(UsageError, match="duplicate label 'Cat'"):
        parse_labels("cat,dog,Cat")


def test_label_with_several_texts() -> None:
    (car,) = parse_labels("car: car | automobile | a red sports car")
    assert car == Label("car", ("car", "automobile", "a red sports car"))


def test_pipe_without_name_uses_the_first_text_as_name() -> None:
    assert parse_labels("kitten | cat") == (Label("kitten", ("kitten", "cat")),)


def test_labels_file_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("# animals\ncat\n\n  dog: dog | puppy  \n# vehicles\ncar\n", encoding="utf-8")
    assert read_labels_file(path) == (
        Label("cat", ("cat",)),
        Label("dog", ("dog", "puppy")),
        Label("car", ("car",)),
    )


def test_labels_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog: dog | | puppy\n", encoding="utf-8")
    with pytest.raises(PromptFileError, match=r"labels.txt:2: empty name or description"):
        read_labels_file(path)


def test_labels_file_with_duplicates_or_nothing_is_refused(tmp_path: Path) -> None:
    dupes = tmp_path / "dupes.txt"
    dupes.write_text("cat\ndog\ncat\n", encoding="utf-8")
    with pytest.raises(PromptFileError, match="duplicate label 'cat'"):
        read_labels_file(dupes)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n", encoding="utf-8")
    with pytest.raises(PromptFileError, match="has no labels"):
        read_labels_file(empty)
