"""The torch-free Hugging Face tokenizer keeps open_clip's HFTokenizer semantics: open_clip's
clean function first, special tokens added, truncation and padding to the context with the pad
id, the separator zeroed on request; no `tokenizers` package is one line naming the extra."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import torch_free_stdout
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from clipcls.engine.bpe import CLEAN_MODES, clean_text
from clipcls.engine.hf_tokens import HfTokenizer
from clipcls.errors import ModelLoadError

VOCAB = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "a", "photo", "of", "cat", "##s", ".", "dog"]
VOCAB += ["b", "[", "]", "/", "=", "cmd", "(", ")", "<pad>"]
CLS, SEP, UNK, PAD2 = 1, 2, 3, VOCAB.index("<pad>")


@pytest.fixture
def wordpiece(tmp_path: Path) -> Path:
    """A BERT-like tokenizer.json over a vocabulary small enough to work ids out by hand."""
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", CLS), ("[SEP]", SEP)]
    )
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def padded(ids: list[int], length: int, pad: int = 0) -> list[int]:
    return ids + [pad] * (length - len(ids))


def test_ids_worked_out_by_hand(wordpiece: Path) -> None:
    texts = [
        "A photo of cats.",
        "",
        "cat\r\ndog",  # whitespace cleaning: one space
        "A_photo of cats!!",  # _ and ! are punctuation words outside the vocabulary
        "&amp;lt;b&amp;gt; [/b] =cmd()",  # entities unescaped (ftfy, then html twice)
    ]
    got = HfTokenizer(wordpiece, context_length=16)(texts)
    assert got.dtype == np.int64 and got.shape == (5, 16)
    assert got.tolist() == [
        padded([CLS, 4, 5, 6, 7, 8, 9, SEP], 16),
        padded([CLS, SEP], 16),
        padded([CLS, 7, 10, SEP], 16),
        padded([CLS, 4, UNK, 5, 6, 7, 8, UNK, UNK, SEP], 16),
        padded([CLS, UNK, 11, UNK, 12, 14, 11, 13, 15, 16, 17, 18, SEP], 16),
    ]


def test_truncation_keeps_the_special_tokens(wordpiece: Path) -> None:
    got = HfTokenizer(wordpiece, context_length=6)(["a photo of a cat a photo of a cat", "cat"])
    assert got.tolist() == [[CLS, 4, 5, 6, 4, SEP], padded([CLS, 7, SEP], 6)]


def test_the_pad_id_pads_and_strip_sep_zeroes_the_separator(wordpiece: Path) -> None:
    text = ["A photo of cats."]
    assert HfTokenizer(wordpiece, context_length=10, pad_id=PAD2)(text).tolist() == [
        [CLS, 4, 5, 6, 7, 8, 9, SEP, PAD2, PAD2]
    ]
    stripped = HfTokenizer(wordpiece, context_length=10, strip_sep_token=True)(text)
    assert stripped.tolist() == [[CLS, 4, 5, 6, 7, 8, 9, 0, 0, 0]]
    # open_clip writes zeros where the separator was, whatever the pad id
    stripped = HfTokenizer(wordpiece, context_length=10, strip_sep_token=True, pad_id=PAD2)(text)
    assert stripped.tolist() == [[CLS, 4, 5, 6, 7, 8, 9, 0, PAD2, PAD2]]
    explicit = HfTokenizer(wordpiece, context_length=10, strip_sep_token=True, sep_id=9)(text)
    assert explicit.tolist() == [[CLS, 4, 5, 6, 7, 8, 0, SEP, 0, 0]]


def test_canonicalize_drops_punctuation_before_the_tokenizer(wordpiece: Path) -> None:
    got = HfTokenizer(wordpiece, context_length=8, clean="canonicalize")(["A_photo of CATS!!"])
    assert got.tolist() == [padded([CLS, 4, 5, 6, 7, 8, SEP], 8)]


@pytest.mark.parametrize("clean", CLEAN_MODES)
def test_a_trained_bpe_gives_cleaned_ids_cut_to_fit_the_specials(
    tmp_path: Path, clean: str
) -> None:
    """A byte-level BPE trained here: each row is <s>, the cleaned text's ids cut to leave room
    for the special tokens (transformers' longest-first truncation of one text), </s>, pads."""
    corpus = [f"a photo of a {w}, the {w} in the wild." for w in ("cat", "dog", "Café", "東京")]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"])
    tokenizer.train_from_iterator(corpus * 20, trainer)
    plain = tokenizer.to_str()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    texts = [*corpus, "", "  A  PHOTO [/b] =cmd() &amp; \r\n😀 " * 3, "x" * 500]
    reference = Tokenizer.from_str(plain)  # no specials, no truncation, no padding
    for context in (4, 16, 77):
        got = HfTokenizer(path, context_length=context, clean=clean)(texts)
        for row, text in enumerate(texts):
            ids = reference.encode(clean_text(text, clean)).ids[: context - 2]
            assert got[row].tolist() == padded([1, *ids, 2], context), (context, text)


def test_open_clips_hftokenizer_agrees_where_transformers_is_installed(wordpiece: Path) -> None:
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed: open_clip's HFTokenizer cannot be built")
    from open_clip.tokenizer import HFTokenizer
    from transformers import PreTrainedTokenizerFast

    folder = wordpiece.parent / "hf"
    fast = PreTrainedTokenizerFast(
        tokenizer_file=str(wordpiece), pad_token="[PAD]", sep_token="[SEP]", cls_token="[CLS]"
    )
    fast.save_pretrained(folder)
    texts = ["A photo of cats.", "", "a photo of a cat " * 5, "&amp;lt;b&amp;gt; [/b]"]
    for clean in CLEAN_MODES:
        for strip in (False, True):
            theirs = HFTokenizer(str(folder), context_length=8, clean=clean, strip_sep_token=strip)
            ours = HfTokenizer(wordpiece, context_length=8, clean=clean, strip_sep_token=strip)
            assert np.array_equal(ours(texts), theirs(texts).numpy())


def test_without_tokenizers_it_is_one_line_naming_the_extra(
    wordpiece: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers now fails
    with pytest.raises(ModelLoadError) as caught:
        HfTokenizer(wordpiece)
    assert "pip install 'clipcls[onnx]'" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_broken_files_and_settings_are_one_model_load_error(
    tmp_path: Path, wordpiece: Path
) -> None:
    broken = {"missing.json": None, "garbage.json": "{not json", "empty.json": "{}"}
    broken["wrong.json"] = json.dumps({"version": "1.0", "model": {"type": "Nope"}})
    for name, text in broken.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ModelLoadError, match=name) as caught:
            HfTokenizer(tmp_path / name)
        assert "\n" not in str(caught.value)
    with pytest.raises(ModelLoadError, match="shout"):
        HfTokenizer(wordpiece, clean="shout")
    with pytest.raises(ModelLoadError, match="context length 0"):
        HfTokenizer(wordpiece, context_length=0)
    bare = Tokenizer(models.WordPiece({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    bare.save(str(tmp_path / "nosep.json"))
    with pytest.raises(ModelLoadError, match=r"no \[SEP\]"):
        HfTokenizer(tmp_path / "nosep.json", strip_sep_token=True)
    with pytest.raises(TypeError):
        HfTokenizer(wordpiece)("a photo")  # type: ignore[arg-type]


def test_a_context_too_short_for_the_special_tokens_is_one_error(wordpiece: Path) -> None:
    with pytest.raises(ModelLoadError, match="context length 1 cannot hold .* 2 special tokens"):
        HfTokenizer(wordpiece, context_length=1)
    assert HfTokenizer(wordpiece, context_length=2)(["a photo", ""]).tolist() == [[CLS, SEP]] * 2


def test_tokenizing_loads_no_torch(wordpiece: Path) -> None:
    code = (
        "from clipcls.engine.hf_tokens import HfTokenizer\n"
        f"print(HfTokenizer({str(wordpiece)!r}, context_length=5)(['a cat'])[0].tolist())\n"
    )
    assert torch_free_stdout(code, also=["transformers"]).strip() == f"[{CLS}, 4, 7, {SEP}, 0]"
