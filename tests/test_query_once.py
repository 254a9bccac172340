"""A search's query is parsed once, where its text comes in (the command line's argument, or
the body a server's guard checks), into a Query whose terms travel on as they are: to the
search library, and from the guard to the worker in the checked request's record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from clipcls import terms
from clipcls.cli import app
from clipcls.client.protocol import Limits, parse_request, request_from_record
from clipcls.client.search_request import SearchRequest
from clipcls.errors import UsageError
from clipcls.terms import Query, Term


def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts parse_query is asked to parse from now on."""
    calls: list[str] = []
    parse = terms.parse_query

    def counting(text: str) -> tuple[Term, ...]:
        calls.append(text)
        return parse(text)

    monkeypatch.setattr(terms, "parse_query", counting)
    return calls


def test_a_search_from_the_command_line_parses_its_query_once(
    tiny_model: str, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counted(monkeypatch)
    args = ["search", str(photos), "a cat + coffee - blurry", "--model", tiny_model, "-q"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert calls == ["a cat + coffee - blurry"]


def test_the_guard_parses_the_text_and_the_worker_takes_its_terms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"search": {"folders": [str(tmp_path)], "text": "a cat - blurry", "k": 3}}
    checked = parse_request(body, Limits(), [str(tmp_path)])
    assert isinstance(checked, SearchRequest)
    assert checked.query.terms == (Term("a cat", 1), Term("blurry", -1))
    record = json.loads(json.dumps(checked.to_record()))  # as the guard hands it on
    assert "text" not in record["search"]
    calls = counted(monkeypatch)
    assert request_from_record(record) == checked
    assert calls == []


@given(st.text(alphabet=" \t\n+-ab", max_size=24))
def test_a_query_written_out_reads_back_as_the_same_terms(text: str) -> None:
    try:
        query = Query.parse(text)
    except UsageError:
        return
    assert Query.parse(query.text) == query
    assert Query.from_record(json.loads(json.dumps(query.to_record()))) == query


def test_a_query_is_written_out_as_the_server_reads_it() -> None:
    assert Query.parse("  a red car +  sunset - blurry ").text == "a red car + sunset - blurry"
    assert Query.parse("- blurry + t-shirt").text == "- blurry + t-shirt"
