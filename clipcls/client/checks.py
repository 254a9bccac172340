"""What a request must be before it is parsed: its error (with the HTTP status to answer),
and its strings: no lone surrogate where text must encode, no NUL anywhere."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from clipcls.errors import ClipclsError


class RequestError(ClipclsError):
    """A request the server refuses: an HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_strings(body: Any) -> None:
    """Refuse a lone surrogate or a NUL in any string or key of a decoded body: they cannot
    reach a file name, SQLite or the tokenizer, and would fail the whole batch there. An
    escaped byte of a non-UTF-8 file name (U+DC80-U+DCFF) may name a file; prompts are
    checked strictly by check_prompts."""
    for text in _strings(body):
        _encodes(text, "surrogateescape")
        if "\0" in text:
            raise RequestError(400, f"a string holds a NUL character: {ascii(text)[:80]}")


def check_prompts(texts: Iterable[str]) -> None:
    """Refuse prompt texts the tokenizer cannot encode (any surrogate, escaped byte or not)."""
    for text in texts:
        _encodes(text, "strict")


def _encodes(text: str, errors: str) -> None:
    try:
        text.encode("utf-8", errors)
    except UnicodeEncodeError:
        raise RequestError(400, f"a string holds a lone surrogate: {ascii(text)[:80]}") from None


def _strings(body: Any) -> Iterator[str]:
    stack = [body]  # not recursive: json.loads already bounded the nesting
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
