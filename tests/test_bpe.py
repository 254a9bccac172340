"""The torch-free BPE tokenizer gives exactly open_clip's ids: prompts from every built-in
template set, hostile text (markup, controls, unicode, mojibake, entities), truncation at the
context length, each clean mode; a broken merges file is one ModelLoadError."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import open_clip
import pytest
from conftest import torch_free_stdout
from open_clip.tokenizer import SimpleTokenizer
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

from clipcls.engine import bpe
from clipcls.engine.bpe import CLEAN_MODES, BpeTokenizer, open_clip_vocab
from clipcls.errors import ModelLoadError
from clipcls.prompts import list_template_sets

HOSTILE = [
    "",
    " ",
    "\t\r\n",
    "a photo of a [/b]cat[b]",
    "=cmd()|' !A0",
    "+SUM(1,2) @x -y",
    "line one\r\nline two\rthree\nfour",
    "tab\tand\x0bvertical\x0cfeed\x85next\u2028sep\u2029para",
    "&amp; &lt;b&gt; &amp;amp;lt; &#39;quoted&#39; &nbsp;x &eacute;",
    "<b>bold</b> &lt;i&gt; mixed &amp;amp;lt;tag&amp;gt;",  # ftfy leaves markup alone
    "<start_of_text> <end_of_text> <START_OF_TEXT> <End_Of_Text>x",
    "&lt;start_of_text&gt; a",
    "don't it's we'll I'M you'VE they'd she'S",
    "café naïve résumé Ünïcödé",
    "cafe\u0301 nai\u0308ve (NFD)",
    "東京の猫 한국어 고양이 Ελληνικά кошка عربى עברית हिन्दी",
    "😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇯🇵",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "ﬁne ﬂower ligatures",
    "â€œquotedâ€\x9d cafÃ© naÃ¯ve",  # mojibake that ftfy repairs
    "\u201ccurly\u201d \u2018single\u2019",
    "\x1b[31mred\x1b[0m terminal escapes",
    "nul\x00byte and \x07bell",
    "lone \ud800 surrogate",
    "12345 3.14159 1,000,000 ½ ² ٣",
    "snake_case kebab-case dotted.name CamelCase",
    "!!!??? ... --- ___ *** ###",
    "ĠĠ Ġhello Ā byte-lookalikes </w>",
    "a" * 300,
    "supercalifragilisticexpialidocious " * 3,
    "word " * 80,  # truncated: more words than the context holds
    "x" * 10_000,
]


def corpus() -> list[str]:
    """Every built-in template with labels cycling through ImageNet's, hostile texts, and
    seeded random strings over mixed scripts."""
    templates = [t for s in list_template_sets() for t in s.templates]
    labels = list(IMAGENET_CLASSNAMES)
    prompts = [t.replace("{}", labels[i * 7 % len(labels)]) for i, t in enumerate(templates)]
    prompts += [
        templates[i % len(templates)].replace("{}", label) for i, label in enumerate(labels)
    ]
    rng = random.Random(37)
    pools = ["abcXYZ  ", "0123456789", ".,;:!?'\"-_()[]{}<>/\\", "éüßøЖж中文日本語😀👍\u0301 "]
    randoms = [
        "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 60)))
        for _ in range(300)
    ]
    return prompts + HOSTILE + [h.upper() for h in HOSTILE] + randoms


CORPUS = corpus()


@pytest.mark.parametrize("clean", CLEAN_MODES)
def test_ids_equal_open_clips_on_a_large_corpus(clean: str) -> None:
    ours = BpeTokenizer(open_clip_vocab(), clean=clean)(CORPUS)
    theirs = SimpleTokenizer(clean=clean)(CORPUS).numpy()
    assert ours.dtype == np.int64 and ours.shape == (len(CORPUS), 77)
    differ = [CORPUS[i] for i in np.flatnonzero((ours != theirs).any(axis=1))]
    assert differ == []


def test_the_default_model_tokenizer_is_the_one_reproduced() -> None:
    texts = CORPUS[::5]
    theirs = open_clip.get_tokenizer("ViT-B-32")(texts).numpy()
    assert np.array_equal(BpeTokenizer(open_clip_vocab())(texts), theirs)


@pytest.mark.parametrize("context_length", [2, 3, 16, 32, 64])
def test_truncation_keeps_end_of_text_last(context_length: int) -> None:
    texts = ["word " * n for n in range(context_length + 3)] + ["東京 " * 40, ""]
    ours = BpeTokenizer(open_clip_vocab(), context_length=context_length)(texts)
    theirs = SimpleTokenizer(context_length=context_length)(texts).numpy()
    assert np.array_equal(ours, theirs)
    tokenizer = BpeTokenizer(open_clip_vocab(), context_length=context_length)
    long = tokenizer(["word " * 100])[0]
    assert long[0] == tokenizer.sot_id and long[-1] == tokenizer.eot_id


def test_a_full_word_cache_starts_over_and_ids_stay_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bpe, "_CACHE_LIMIT", 3)
    tokenizer = BpeTokenizer(open_clip_vocab())
    texts = CORPUS[:200]
    assert np.array_equal(tokenizer(texts), SimpleTokenizer()(texts).numpy())
    assert len(tokenizer._words) <= 3


def test_the_vocab_is_found_without_importing_open_clip() -> None:
    assert open_clip_vocab() == Path(open_clip.tokenizer.default_bpe())
    code = (
        "from clipcls.engine.bpe import BpeTokenizer, open_clip_vocab\n"
        "t = BpeTokenizer(open_clip_vocab())\nprint(t(['a photo of a cat.'])[0, :8].tolist())\n"
    )
    assert (
        torch_free_stdout(code).split() == "[49406, 320, 1125, 539, 320, 2368, 269, 49407]".split()
    )


def test_a_single_string_is_refused_not_split_into_characters() -> None:
    with pytest.raises(TypeError):
        BpeTokenizer(open_clip_vocab())("a photo")  # type: ignore[arg-type]


def test_broken_merges_files_are_one_model_load_error(tmp_path: Path) -> None:
    real = gzip.decompress(open_clip_vocab().read_bytes()).decode("utf-8")
    short = "\n".join(real.split("\n")[:1000])
    tripled = real.replace(" ", " x ", 5)  # a few merges of three symbols
    cases = {
        "missing.gz": None,
        "plain.gz": b"not gzip at all",
        "latin1.gz": gzip.compress("#version\n\xff\xfe".encode("latin-1")),
        "empty.gz": gzip.compress(b""),
        "short.gz": short.encode("utf-8"),
        "tripled.gz": tripled.encode("utf-8"),
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(gzip.compress(data) if name in ("short.gz", "tripled.gz") else data)
        with pytest.raises(ModelLoadError, match=name):
            BpeTokenizer(path)


def test_unknown_settings_are_refused() -> None:
    with pytest.raises(ModelLoadError, match="shout"):
        BpeTokenizer(open_clip_vocab(), clean="shout")
    with pytest.raises(ModelLoadError, match="context length 1"):
        BpeTokenizer(open_clip_vocab(), context_length=1)
