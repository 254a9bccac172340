"""`clipcls search DIR... "QUERY" --server URL` answered by a warm server without loading Typer,
numpy or the cache: a plain text query over folders the server may read is one request, and
starting the whole command line would cost more than the answer. Anything else (another
option, a file among the inputs, a server that refuses or is still loading) returns None and
the full command line runs, so every fallback is the one it gives; a search sent that fails
is said here as it says it, and never sent twice."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from clipcls.cli.messages import error_line, notice, stderr, warn
from clipcls.errors import ClipclsError, ExitStatus, UsageError
from clipcls.output.formats import RESULT_FORMATS, Format
from clipcls.search.served import DEFAULT_K, HIT_COLUMNS, served_ranking
from clipcls.search.terms import parse_query
from clipcls.server.wire import ServerConnection
from clipcls.settings import CACHE_ENV, model_id

SERVER_ENV = "CLIPCLS_SERVER"  # --server's environment variable (cli/options.py)
FORMATS = {f.name: f for f in RESULT_FORMATS}
VALUED = {"-k": "k", "--top-k": "k", "--server": "server", "-f": "format", "--format": "format"}
FLAGS = {"-q": "quiet", "--quiet": "quiet"}
STDIN = "-"  # an input that reads the paths from stdin (images.STDIN; images loads numpy)


@dataclass(frozen=True)
class QuickSearch:
    """A search the fast path can answer: folders, the query text, and how to print."""

    inputs: tuple[str, ...]
    text: str
    server: str
    k: int = DEFAULT_K
    fmt: Format = Format.TABLE
    quiet: bool = False


def quick_search(argv: Sequence[str]) -> int | None:
    """The exit status of a search a warm server answered and this printed; None where the
    full command line must run (nothing was printed then)."""
    asked = parse_quick(argv, os.environ.get(SERVER_ENV))
    if asked is None or not _cache_dir_taken(os.environ.get(CACHE_ENV)) or sys.stdout is None:
        return None  # sys.stdout None: started with stdout closed (the full CLI says so)
    try:
        server = ServerConnection(asked.server, load_wait=0.0)  # loading: the full CLI waits
    except ClipclsError:
        return None  # the full command line says it in its words (or waits for a loading server)
    except KeyboardInterrupt as stop:
        return _stopped(stop, None)
    told = None if asked.quiet else server.describe()
    try:
        model = model_id(*server.model)
        ranking = served_ranking(server.search_folders, asked.inputs, asked.text, asked.k, model)
    except (ClipclsError, KeyboardInterrupt) as stop:  # sent: never sent again by the full CLI
        return _stopped(stop, told)
    if ranking is None:
        return None
    if told is not None:
        notice(told)
    for _, error in ranking.failures:
        warn(error)  # it names the file, as the full command's warnings do
    rows = [(hit.rank, hit.path, hit.score) for hit in ranking.hits]
    try:
        asked.fmt.write_records(sys.stdout, HIT_COLUMNS, rows)
    except BrokenPipeError:  # `| head -1` is done: end quietly with 1, as Click ends the full CLI
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit flush too
        return int(ExitStatus.ERROR)
    except (ClipclsError, KeyboardInterrupt) as stop:  # a full disk; a slow reader (`| less`)
        return _stopped(stop, None)
    return int(ExitStatus.OK)


def _stopped(stop: ClipclsError | KeyboardInterrupt, told: str | None) -> int:
    """What the full command line prints for an error or Ctrl-C, and its exit status: once
    connected, its notice of the server (told) comes first."""
    if told is not None:
        notice(told)
    if isinstance(stop, KeyboardInterrupt):
        stderr.print("interrupted", style="red")
        return int(ExitStatus.INTERRUPTED)
    error_line(str(stop))
    return int(stop.exit_status)


def parse_quick(argv: Sequence[str], server_env: str | None) -> QuickSearch | None:
    """The search argv asks for, if it is `search`, folders and a query, and only the options
    the fast path knows (-k, --server, -f, -q) in a form it reads exactly as Click would;
    else None."""
    if not argv or argv[0] != "search":
        return None
    values: dict[str, str] = {}
    positional: list[str] = []
    words = iter(argv[1:])
    for word in words:
        name, attached = _option(word)
        if name is None:
            positional.append(word)
        elif name in FLAGS and attached is None:
            values[FLAGS[name]] = ""
        elif name in VALUED:
            value = attached if attached is not None else next(words, None)
            if value is None:
                return None
            values[VALUED[name]] = value
        else:
            return None  # an option the full command line knows (or refuses)
    return _checked(values, positional, server_env)


def _option(word: str) -> tuple[str | None, str | None]:
    """(option name, value attached to it) for `--top-k=5`, `-k5`, `-q`; (None, None) for an
    argument. `-` alone and anything after `--` are left to the full command line."""
    if not word.startswith("-") or word == "-":
        return None, None
    if word.startswith("--"):
        name, equals, value = word.partition("=")
        return name, (value if equals else None)
    if len(word) > 2:
        return (word[:2], word[2:]) if word[:2] in VALUED else (word, None)
    return word, None


def _cache_dir_taken(value: str | None) -> bool:
    """Whether Click takes $CLIPCLS_CACHE_DIR for --cache-dir (file_okay=False, readable): it
    checks a path that exists, and refuses a file or an unreadable one (exit 2)."""
    if not value:
        return True  # Click reads an empty variable as unset
    try:
        mode = os.stat(value).st_mode
    except OSError:
        return True  # not there yet: created on first use
    return not stat.S_ISREG(mode) and os.access(value, os.R_OK)


def _query_taken(text: str) -> bool:
    """Whether the full command line takes text as a query: it refuses an empty one, or one
    with an empty term, before it asks the server (which a stranger might answer)."""
    try:
        return bool(parse_query(text))
    except UsageError:
        return False


def _checked(values: dict[str, str], positional: list[str], env: str | None) -> QuickSearch | None:
    """The search, if every value is one the full command line would take as it is."""
    server = values.get("server", env or "")
    k = values.get("k", str(DEFAULT_K))
    fmt = FORMATS.get(values.get("format", Format.TABLE.name))
    if not server or fmt is None or len(positional) < 2 or STDIN in positional[:-1]:
        return None
    if not (k.isascii() and k.isdigit()) or int(k) < 1 or not _query_taken(positional[-1]):
        return None
    quiet = "quiet" in values
    return QuickSearch(tuple(positional[:-1]), positional[-1], server, int(k), fmt, quiet)
