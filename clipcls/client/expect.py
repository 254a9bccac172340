"""What a command's model options ask of a `clipcls serve` server: a server runs with its own
device, precision, decoding and weights, so options given explicitly must match them."""

from __future__ import annotations

import os
from typing import Any

from clipcls.client.predict import ServerClient
from clipcls.digests import file_digest


def setting_conflict(client: ServerClient, asked: dict[str, Any]) -> str | None:
    """Why the server cannot run as the options given on the command line ask, or None.

    asked holds only options given explicitly: device, precision, exact_decode, pretrained
    (values as the CLI parses them). A server answers with its own settings, never these.
    """
    facts = client.facts
    device, precision = str(facts.get("device")), str(facts.get("precision"))
    wanted = {name: getattr(value, "value", value) for name, value in asked.items()}
    if wanted.get("device", "auto") not in ("auto", device.split(":")[0]):
        return f"--device {wanted['device']}: the server at {client.url} runs on {device}"
    if wanted.get("precision", "auto") not in ("auto", precision):
        return f"--precision {wanted['precision']}: the server at {client.url} runs {precision}"
    if wanted.get("exact_decode") and facts.get("exact_decode") is not True:
        return f"--exact-decode: the server at {client.url} decodes JPEGs at draft scale"
    pretrained = wanted.get("pretrained")
    if pretrained is not None and not _same_weights(client, str(pretrained)):
        tag = facts.get("pretrained")
        runs = f"{facts.get('model')}" + (f" with {tag}" if tag else " without --pretrained")
        return f"--pretrained {pretrained}: the server at {client.url} runs {runs}"
    return None


def _same_weights(client: ServerClient, pretrained: str) -> bool:
    """Whether --pretrained names the server's weights: its tag, or a file of the same bytes."""
    if pretrained == client.facts.get("pretrained"):
        return not os.path.isfile(pretrained) or _file_matches(client, pretrained)
    return os.path.isfile(pretrained) and _file_matches(client, pretrained)


def _file_matches(client: ServerClient, path: str) -> bool:
    weights = client.weights or ""
    try:
        return weights.endswith(f"+file:{file_digest(path)}")
    except OSError:
        return False
