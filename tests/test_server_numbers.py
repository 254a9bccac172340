"""A server's numbers are checked as a saved file's are: a logit scale or bias no model has, or
text embeddings that are no unit vectors, are one error line, never probabilities of 0, 1 or
NaN that look like answers."""

import math
from collections.abc import Iterator
from typing import Any

import pytest
from test_server_trust import LyingServer, local_facts

from clipcls.client.predict import RemoteEncoder, ServerClient
from clipcls.errors import ClipclsError


class LongVectors(LyingServer):
    """Sends text embeddings 1000 times too long (which scored 1.000000 when only their
    finiteness was checked)."""

    def predicted(self, kind: str, body: bytes) -> dict[str, Any]:
        answer = super().predicted(kind, body)
        if "embeddings" in answer:
            answer["embeddings"] = [[1000.0 * x for x in row] for row in answer["embeddings"]]
        return answer


@pytest.fixture
def facts(tiny_model: str) -> tuple[dict[str, Any], int]:
    return local_facts(tiny_model)


@pytest.fixture
def long_vectors(facts: tuple[dict[str, Any], int]) -> Iterator[LongVectors]:
    server = LongVectors(*facts)
    yield server
    server.close()


@pytest.mark.parametrize(
    ("scale", "bias"), [(1e6, None), (0.0, None), (-1.0, None), (math.nan, None), (50.0, 1e6)]
)
def test_a_logit_scale_or_bias_no_model_has_is_refused_on_opening(
    facts: tuple[dict[str, Any], int], scale: float, bias: float | None
) -> None:
    known, dim = facts
    server = LyingServer({**known, "logit_scale": scale, "logit_bias": bias}, dim)
    try:
        with pytest.raises(ClipclsError, match="reports a logit scale or bias no model has"):
            ServerClient(server.url)
    finally:
        server.close()


def test_the_scales_of_real_models_are_taken(facts: tuple[dict[str, Any], int]) -> None:
    known, dim = facts
    for scale, bias in [(100.0, None), (117.33, -12.93), (1.0, 0.0)]:
        server = LyingServer({**known, "logit_scale": scale, "logit_bias": bias}, dim)
        try:
            assert ServerClient(server.url).facts["logit_scale"] == scale
        finally:
            server.close()


def test_text_embeddings_that_are_no_unit_vectors_are_refused(long_vectors: LongVectors) -> None:
    encoder = RemoteEncoder(ServerClient(long_vectors.url))
    with pytest.raises(ClipclsError, match=r"vector 1 of 2 has length 1000, not 1"):
        encoder.encode_texts(["a photo of a rocket.", "a photo of a cat."])
