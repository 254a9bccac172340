"""A search query's words: rclip-style `a red car + sunset - blurry` parsed into signed terms,
in the standard library alone, so that the fast path of `clipcls search --server` refuses the
queries the full command line refuses before it asks a server (core: the client's requests
carry them too)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from clipcls.errors import UsageError

# A sign is a word of its own (spaces or an end around it): "t-shirt" and "a+b" are one term.
SEPARATOR = re.compile(r"(?:(?<=\s)|^)([+-])(?=\s|$)")


@dataclass(frozen=True)
class Term:
    """One text of a query and whether it pulls (+1) or pushes (-1)."""

    text: str
    sign: int


def parse_query(query: str) -> tuple[Term, ...]:
    """The signed terms of an rclip-style query: `a red car + sunset - blurry` is a red car
    and sunset, away from blurry. UsageError for an empty query or an empty term."""
    text, lead = query.strip(), 1
    if SEPARATOR.match(text):  # a leading sign: "- blurry" or "+ sunset"
        text, lead = text[1:].strip(), (-1 if text[0] == "-" else 1)
    parts = SEPARATOR.split(text)
    texts, signs = parts[0::2], [lead] + [1 if sign == "+" else -1 for sign in parts[1::2]]
    terms = tuple(Term(text.strip(), sign) for text, sign in zip(texts, signs, strict=True))
    if any(not term.text for term in terms):
        raise UsageError(f"query {query!r} has an empty term: write `a + b - c`")
    if all(term.sign < 0 for term in terms):
        raise UsageError(f"query {query!r} has only - terms: say what to look for first")
    return terms
