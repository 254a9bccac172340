"""CLIP's byte-pair tokenizer without torch: the ids open_clip's SimpleTokenizer gives, in numpy.

It reads open_clip's merges file (bpe_simple_vocab_16e6.txt.gz; an ONNX folder carries a copy),
cleans text as open_clip does (ftfy, HTML unescaping, whitespace; lower case or canonical form),
and writes start-of-text, the tokens, end-of-text, zero padding: (n, context_length) int64.
"""

from __future__ import annotations

import html
import importlib.util
import string
import zlib
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.errors import ModelLoadError

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLEAN_MODES = ("lower", "whitespace", "canonicalize")
# open_clip keeps the first 48,894 merges: 256 bytes, 256 word-final bytes, the merges and the
# two special tokens make its 49,408 ids.
_MERGES = 49152 - 256 - 2
_WORD_END = "</w>"
_SPECIALS = ("<start_of_text>", "<end_of_text>")
_CACHE_LIMIT = 100_000  # words remembered; a long-lived server starts over past this
# Words: the special tokens, English contractions, runs of letters, single digits, runs of
# anything else but spaces. Case-insensitive, as open_clip compiles it (so a "<START_OF_TEXT>"
# in a prompt is one word, though only the lower-case one is the special token).
_WORD_PATTERN = (
    "|".join(_SPECIALS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def open_clip_vocab() -> Path:
    """Where the installed open_clip keeps its merges file, found without importing open_clip.

    Only an export needs it (it copies the file into the ONNX folder): at run time the ONNX
    runtime reads the folder's copy, so running an ONNX folder needs no open_clip at all.
    """
    spec = importlib.util.find_spec("open_clip")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / VOCAB_FILE
        if path.is_file():
            return path
    raise ModelLoadError(f"open_clip's {VOCAB_FILE} was not found: is open_clip_torch installed?")


def _byte_chars() -> list[tuple[int, str]]:
    """(byte, the character standing for it) in the order of CLIP's first 256 ids: bytes that
    print as themselves first, then the rest, each moved past U+00FF in byte order."""
    plain = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    plain += range(ord("®"), ord("ÿ") + 1)
    kept = set(plain)
    moved = [byte for byte in range(256) if byte not in kept]
    return [(b, chr(b)) for b in plain] + [(b, chr(256 + n)) for n, b in enumerate(moved)]


def _read_merges(path: Path) -> str:
    """The merges open_clip uses, one "first second" a line (the header line left out).

    They fill the first fifth of the file: only that much is decompressed.
    """
    try:
        stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        raw, head = path.read_bytes(), b""
        while head.count(b"\n") <= _MERGES and raw:
            head += stream.decompress(raw, 1 << 19)
            raw = stream.unconsumed_tail
        rest = head.split(b"\n", _MERGES + 1)[-1]
        text = head[head.index(b"\n") + 1 : len(head) - len(rest) - 1].decode("utf-8")
    except (OSError, zlib.error, UnicodeDecodeError, ValueError) as error:
        raise ModelLoadError(f"cannot read the BPE merges file {path}: {error}") from error
    if text.count("\n") != _MERGES - 1 or text.count(" ") != _MERGES:
        raise ModelLoadError(f"{path} is not a CLIP BPE merges file")
    return text


def _whitespace(text: str) -> str:
    return " ".join(text.split())


def _canonical(text: str) -> str:
    """big_vision's canonical form, as open_clip applies it: no punctuation, lower case."""
    return _whitespace(text.replace("_", " ").translate(_NO_PUNCTUATION).lower())


_CLEANERS: dict[str, Callable[[str], str]] = {
    "lower": lambda text: _whitespace(text).lower(),
    "whitespace": _whitespace,
    "canonicalize": _canonical,
}


def clean_text(text: str, clean: str) -> str:
    """open_clip's clean function by name: ftfy's repairs, HTML entities unescaped twice, outer
    space stripped, then "lower" (runs of space made one, lower case), "whitespace" (the same,
    case kept) or "canonicalize" (no punctuation, lower case). ftfy loads on first use."""
    import ftfy

    return _CLEANERS[clean](html.unescape(html.unescape(ftfy.fix_text(text))).strip())


class BpeTokenizer:
    """Texts -> (n, context_length) int64 token ids, exactly as open_clip's SimpleTokenizer."""

    def __init__(self, merges_file: str | Path, context_length: int = 77, clean: str = "lower"):
        if clean not in CLEAN_MODES:
            raise ModelLoadError(f"unknown tokenizer clean mode {clean!r}: one of {CLEAN_MODES}")
        if context_length < 2:
            raise ModelLoadError(f"context length {context_length} leaves no room for a token")
        self.context_length = context_length
        self.clean = clean
        merges = _read_merges(Path(merges_file))
        chars = _byte_chars()
        self._byte_table = str.maketrans({byte: char for byte, char in chars})
        # ids: the 256 byte characters, the same at a word's end, the merges, the specials
        symbols = [char for _, char in chars]
        symbols += [char + _WORD_END for char in symbols]
        symbols += merges.replace(" ", "").split("\n")  # a merge's symbol: its pair joined
        symbols += _SPECIALS
        self._ids = dict(zip(symbols, range(len(symbols)), strict=True))
        self._ranks = dict(zip(merges.split("\n"), range(_MERGES), strict=True))
        self.sot_id, self.eot_id = self._ids[_SPECIALS[0]], self._ids[_SPECIALS[1]]
        self._words: dict[str, tuple[int, ...]] = {}
        self._pattern: Any = None  # compiled on first use: a run with cached prompts needs no regex

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids (n, context_length): start, tokens, end, zeros; a long text keeps its first
        context_length - 1 ids and ends with end-of-text."""
        if isinstance(texts, str):
            raise TypeError("BpeTokenizer takes a sequence of texts, not one string")
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text)][: self.context_length - 1]
            ids.append(self.eot_id)
            out[row, : len(ids)] = ids
        return out

    def encode(self, text: str) -> list[int]:
        """The token ids of one text, cleaned as open_clip cleans it, without start and end."""
        if self._pattern is None:
            import regex  # type: ignore[import-untyped]

            self._pattern = regex.compile(_WORD_PATTERN, regex.IGNORECASE)
        ids: list[int] = []
        for word in self._pattern.findall(clean_text(text, self.clean)):
            ids.extend(self._word_ids(word))
        return ids

    def _word_ids(self, word: str) -> tuple[int, ...]:
        """One word's ids: its UTF-8 bytes as characters, merged pair by pair, lowest rank first."""
        known = self._words.get(word)
        if known is not None:
            return known
        if word in _SPECIALS:  # only the exact lower-case spelling is the special token
            return (self._ids[word],)
        chars = word.encode("utf-8").decode("latin-1").translate(self._byte_table)
        ids = tuple(self._ids[symbol] for symbol in self._merge(chars))
        if len(self._words) >= _CACHE_LIMIT:
            self._words.clear()
        self._words[word] = ids
        return ids

    def _merge(self, chars: str) -> list[str]:
        """Apply the merges: each round joins every left-to-right occurrence of the best pair."""
        symbols = [*chars[:-1], chars[-1] + _WORD_END]
        ranks = self._ranks
        while len(symbols) > 1:
            best, best_rank = "", len(ranks)
            for first, second in pairwise(symbols):
                rank = ranks.get(first + " " + second, best_rank)
                if rank < best_rank:
                    best, best_rank = first + " " + second, rank
            if not best:
                break
            first, second = best.split(" ")
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if symbols[i] == first and i + 1 < len(symbols) and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols
