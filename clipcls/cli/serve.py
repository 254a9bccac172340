"""`clipcls serve`: keep one model loaded and answer predict requests over HTTP."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any

import typer

from clipcls.cli.console import notice, reported_errors, warn
from clipcls.cli.model_options import model_options, model_settings
from clipcls.cli.options import DebugOpt
from clipcls.engine.hardware import check_device_early
from clipcls.engine.sources import check_model_name, random_weights_notices
from clipcls.errors import UsageError

EXAMPLES = """
[bold]Examples[/bold]

  clipcls serve                                  # the default model on 127.0.0.1:8765
  clipcls predict photo.jpg --labels cat,dog --server http://127.0.0.1:8765
  clipcls serve --allow-dir /srv/photos --model ViT-B-16:datacomp_xl_s13b_b90k
  CLIPCLS_API_KEY=secret clipcls serve --host 0.0.0.0 --port 9000
  curl -s localhost:8765/v1/predict -F labels=cat,dog -F images=@photo.jpg
  clipcls serve --support examples/          # examples/cat/*.jpg, examples/dog/...
"""
PENDING_BODIES = 4  # bodies of --max-body-mb the server holds at once, over all connections
INSTALL = "clipcls serve needs LitServe: pip install 'clipcls[serve]'"


@model_options()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on: 127.0.0.1, localhost, 0.0.0.0 or ::."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="CLIPCLS_API_KEY",
            help="Require this key in the X-API-Key header (needed off loopback).",
        ),
    ] = None,
    allow_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--allow-dir",
            metavar="DIR",
            file_okay=False,
            exists=True,
            help="A folder whose files requests may name by path (repeatable).",
        ),
    ] = None,
    allow_url_hosts: Annotated[
        str | None,
        typer.Option(
            metavar="HOST[,HOST...]",
            help="Hosts, addresses or networks (10.0.0.0/8) whose image URLs may be fetched "
            "although they are loopback or private (by default only public addresses).",
        ),
    ] = None,
    max_images: Annotated[int, typer.Option(min=1, help="Images per request.")] = 256,
    max_labels: Annotated[int, typer.Option(min=1, help="Labels per request.")] = 1000,
    max_texts: Annotated[
        int,
        typer.Option(
            min=1,
            help="Prompts per request (label texts x templates, or texts): the text tower's work.",
        ),
    ] = 4096,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Request body size, MB.")] = 64.0,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds a request may take.")] = 60.0,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Keep no embedding cache: every image and prompt is embedded each time.",
        ),
    ] = False,
    support: Annotated[
        Path | None,
        typer.Option(
            "--support",
            metavar="DIR",
            file_okay=False,
            help="Example images in DIR/<label>/, embedded once at start: each request is also "
            "scored by the examples whose folder name is one of its labels (the others are "
            "not used). Clients that score on their side (clipcls --server) give their own "
            "--support.",
        ),
    ] = None,
    multi_label: Annotated[
        bool,
        typer.Option(
            "--multi-label",
            help="Answer with each label's own probability (a SigLIP model's sigmoid; others: "
            "each label against a background prompt) unless a request says multi_label=false.",
        ),
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Keep a model loaded and answer predict requests over HTTP, batching concurrent ones."""
    from clipcls.client.protocol import Limits

    with reported_errors(debug):
        if importlib.util.find_spec("litserve") is None:
            raise UsageError(INSTALL)
        from clipcls.server.app import ServeOptions, check_options, listen
        from clipcls.server.app import serve as run_server

        settings = model_settings(ctx)
        check_model_name(settings)
        check_device_early(settings.device, settings.precision)
        body = int(max_body_mb * 1e6)
        limits = Limits(
            body,
            max_images,
            max_labels,
            seconds=timeout,
            max_texts=max_texts,
            max_pending_bytes=PENDING_BODIES * body,
        )
        roots = tuple(str(d) for d in allow_dir or ())
        url_hosts = tuple(h.strip() for h in (allow_url_hosts or "").split(",") if h.strip())
        options = ServeOptions(
            host, port, api_key, roots, limits, url_hosts, no_cache, support, multi_label
        )
        check_options(options)
        sock = listen(options)  # held from now on: a second server on this port stops here
        url = f"http://{host}:{port}"
        notice(f"serving {settings.model} on {url} (loading the model)")
        for line in random_weights_notices(settings.model):
            warn(line)

        def ready(facts: dict[str, Any]) -> None:
            weights = f" ({facts['pretrained']})" if facts.get("pretrained") else ""
            model = f"{facts['model']}{weights} on {facts['device']}, {facts['precision']}"
            notice(f"ready: {model}, answering on {url}")
            said = facts.get("support") or {}
            for line in said.get("notes", []):
                warn(line)
            if said:
                examples = said.get("examples", {})
                notice(f"support set: {sum(examples.values())} examples of {len(examples)} labels")

        run_server(settings, options, ready, sock)
