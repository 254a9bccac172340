"""A search request to `clipcls serve`: folders under the server's --allow-dir roots ranked
by cosine to a text query, read from a JSON body {"search": {"folders", "text", "k"}} and
checked (400, 403), its text parsed into a Query there, once, before the worker walks the
folders and answers from its own cache."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clipcls.client.allowed import allowed
from clipcls.client.checks import RequestError, check_prompts
from clipcls.errors import UsageError
from clipcls.terms import Query

MAX_QUERY_CHARS = 1000  # as a prompt: CLIP reads 77 tokens, the rest is only work
MAX_FOLDERS = 256
FIELDS = {"folders", "text", "k"}


@dataclass(frozen=True)
class SearchRequest:
    """A checked search: the folders to walk (absolute, as given), the query, and k."""

    folders: tuple[str, ...]
    query: Query
    k: int = 20

    def to_record(self) -> dict[str, Any]:
        """The checked search as JSON, as the guard hands it to the model worker: the query
        as its terms, which the worker takes as they are."""
        folders, query = list(self.folders), self.query.to_record()
        return {"search": {"folders": folders, "query": query, "k": self.k}}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SearchRequest:
        """The search to_record wrote, taken as it is: parse_search checked it already."""
        inner = record["search"]
        query = Query.from_record(inner["query"])
        return cls(tuple(inner["folders"]), query, int(inner["k"]))


def parse_search(body: dict[str, Any], max_k: int, allow_dirs: Sequence[str]) -> SearchRequest:
    """Check a search body; RequestError (400 or 403) says what is wrong."""
    inner = body["search"]
    if set(body) != {"search"} or not isinstance(inner, dict):
        raise RequestError(400, 'a search request holds only {"search": {...}}')
    unknown = set(inner) - FIELDS
    if unknown:
        raise RequestError(400, f"unknown search fields: {', '.join(sorted(unknown))}")
    text, k = inner.get("text"), inner.get("k", 20)
    if not isinstance(text, str) or not text.strip():
        raise RequestError(400, "'search.text' must be a non-empty string")
    check_prompts([text])
    if len(text) > MAX_QUERY_CHARS:
        raise RequestError(
            413, f"a query of {len(text)} characters; the limit is {MAX_QUERY_CHARS}"
        )
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= max_k:
        raise RequestError(400, f"'search.k' must be a whole number from 1 to {max_k}")
    folders = inner.get("folders")
    if not isinstance(folders, list) or not folders or len(folders) > MAX_FOLDERS:
        raise RequestError(400, f"'search.folders' must be a list of 1 to {MAX_FOLDERS} folders")
    checked = tuple(_folder(folder, i, allow_dirs) for i, folder in enumerate(folders))
    try:
        return SearchRequest(checked, Query.parse(text), k)  # the one parse of the text here
    except UsageError as error:
        raise RequestError(400, str(error)) from None


def _folder(folder: Any, index: int, allow_dirs: Sequence[str]) -> str:
    """folder, if it is an absolute path to a directory under a root (links resolved)."""
    where = f"search.folders[{index}]"
    if not isinstance(folder, str) or not os.path.isabs(folder) or "\0" in folder:
        raise RequestError(400, f"{where} must be an absolute path")
    if not allowed(folder, allow_dirs):
        raise RequestError(403, f"{where} is outside the server's --allow-dir roots")
    if not os.path.isdir(folder):
        raise RequestError(400, f"{where} is not a folder")
    return folder
