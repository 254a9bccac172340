"""`clipcls doctor`: what this installation would run, and with what, for bug reports."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from clipcls.cli.console import notice, reported_errors, stderr
from clipcls.cli.options import CacheDirOpt, DebugOpt, JsonOpt
from clipcls.output.writers import plain_console
from clipcls.settings import ModelSettings

if TYPE_CHECKING:
    from clipcls.doctor import DoctorReport

EXAMPLES = """
[bold]Examples[/bold]

  clipcls doctor
  clipcls doctor --json | jq .device
"""


def _size(count: int) -> str:
    return f"{count / 1024**2:,.1f} MB"


def _rows(report: DoctorReport) -> list[tuple[str, str]]:
    build = f"CUDA {report.torch_cuda}" if report.torch_cuda else "CPU-only"
    extras = ", ".join(
        f"{e.name} ({e.module} {e.version})" if e.installed else f"{e.name}: no"
        for e in report.extras
    )
    env = ", ".join(f"{name} {'set' if is_set else 'unset'}" for name, is_set in report.env)
    defaults = "; ".join(f"{key} {value} (from {source})" for key, value, source in report.defaults)
    return [
        ("clipcls", report.clipcls_version),
        ("python", report.python_version),
        ("open_clip", report.open_clip_version or "not installed"),
        ("torch", report.torch_error or f"{report.torch_version} ({build} build)"),
        *([("torch build", report.torch_advice)] if report.torch_advice else []),
        ("device", f"{report.device}: {report.device_reason}"),
        ("precision", f"{report.precision}: {report.precision_reason}"),
        ("onnx runtime", ", ".join(report.onnx_providers) or "-"),
        ("runtime", report.onnx_choice),
        ("cache", f"{report.cache_dir} ({_size(report.cache_bytes)})"),
        ("config", report.config_file),
        ("defaults", f"error: {report.config_error}" if report.config_error else defaults),
        ("extras", extras),
        ("environment", env),
    ]


def doctor(
    as_json: JsonOpt = False,
    cache_dir: CacheDirOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Show versions, the torch build (and how to switch to the CPU-only one where no GPU is
    used), the device and precision a run would pick and why, the cache, the config file and
    the default model, installed extras and server settings."""
    from clipcls.doctor import doctor_report

    with reported_errors(debug):
        with stderr.status("importing torch to read its build"):
            report = doctor_report(ModelSettings(cache_dir=cache_dir))
        if as_json:
            typer.echo(json.dumps(report.as_dict(), indent=2))
            return
        table = Table(show_header=False, box=None)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for name, value in _rows(report):
            table.add_row(name, value)
        plain_console().print(table, markup=False)
        if report.torch_switch:  # on a line of its own, so that it copies whole
            notice(f"to switch to the CPU-only torch: {report.torch_switch}")
