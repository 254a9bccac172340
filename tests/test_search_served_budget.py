"""A served search answers nobody else while it gathers its matrix, so it has a budget: past a
predict request's worth of images to embed, or the server's --timeout, it answers 409 and the
client searches on its side (embedding through predict requests that share the worker)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import colour_images
from test_search_attack import served_search

from clipcls.client.checks import RequestError
from clipcls.client.search_request import SearchRequest
from clipcls.server import searching
from clipcls.server.searching import Budget
from clipcls.terms import Query


def test_a_search_stops_past_its_budget_of_images_to_embed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    colour_images(tmp_path / "photos", 10)
    monkeypatch.setattr(searching, "CHUNK", 4)  # files decoded at once
    search = served_search(tmp_path)
    request = SearchRequest((str(tmp_path / "photos"),), Query.parse("red"), 3)
    search.budget = Budget(images=4, seconds=60.0)
    with pytest.raises(RequestError) as refused:
        search.answer(request)
    assert refused.value.status == 409 and "more than 4 of the 10 images" in str(refused.value)
    assert search.embedded == 4  # the first chunk only: the second was refused before embedding
    search.budget = Budget(images=10, seconds=60.0)
    assert len(search.answer(request)["search"]) == 3


def test_a_search_stops_past_the_servers_timeout(tmp_path: Path) -> None:
    colour_images(tmp_path / "photos", 3)
    search = served_search(tmp_path)
    search.budget = Budget(images=100, seconds=0.0)
    with pytest.raises(RequestError) as refused:
        search.answer(SearchRequest((str(tmp_path / "photos"),), Query.parse("red"), 3))
    assert refused.value.status == 409 and "took over 0 s" in str(refused.value)
    assert search.embedded == 0
