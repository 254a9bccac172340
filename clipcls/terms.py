"""A search query's words: rclip-style `a red car + sunset - blurry` parsed once into a Query of
signed terms, in the standard library alone, so that the fast path of `clipcls search --server`
refuses the queries the full command line refuses before it asks a server."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from clipcls.errors import UsageError
from clipcls.labels import prompt_text

# A sign is a word of its own (spaces or an end around it): "t-shirt" and "a+b" are one term.
SEPARATOR = re.compile(r"(?:(?<=\s)|^)([+-])(?=\s|$)")


@dataclass(frozen=True)
class Term:
    """One text of a query and whether it pulls (+1) or pushes (-1)."""

    text: str
    sign: int


def parse_query(query: str) -> tuple[Term, ...]:
    """The signed terms of an rclip-style query: `a red car + sunset - blurry` is a red car
    and sunset, away from blurry; its text as the tokenizer reads it (prompt_text).
    UsageError for an empty query or an empty term."""
    text, lead = prompt_text(query).strip(), 1
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


@dataclass(frozen=True)
class Query:
    """A text query as the search runs it: its terms, parsed once (where the text came in:
    the command line, or a server's request) and handed on as they are, never parsed again."""

    terms: tuple[Term, ...]

    @classmethod
    def parse(cls, text: str) -> Query:
        """The query text means (UsageError for one the grammar refuses)."""
        return cls(parse_query(text))

    @property
    def text(self) -> str:
        """The query written out again, as parse reads it back: `a red car + sunset - blurry`."""
        first, *rest = self.terms
        words = [("- " if first.sign < 0 else "") + first.text]
        words += [("+ " if term.sign > 0 else "- ") + term.text for term in rest]
        return " ".join(words)

    def to_record(self) -> list[dict[str, Any]]:
        """The terms as JSON (the checked search a server's guard hands to its worker)."""
        return [{"text": term.text, "sign": term.sign} for term in self.terms]

    @classmethod
    def from_record(cls, record: list[dict[str, Any]]) -> Query:
        """The query to_record wrote, taken as it is (it was parsed before it was written)."""
        return cls(tuple(Term(str(term["text"]), int(term["sign"])) for term in record))
