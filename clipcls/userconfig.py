"""A user's default model, precision and runtime: the command line, then $CLIPCLS_MODEL,
$CLIPCLS_PRECISION and $CLIPCLS_RUNTIME, then the config file, then the built-in defaults.

The file is `key = "value"` lines and `#` comments: a subset of TOML (any TOML reader reads it
alike) that needs no parser beyond this module, so it reads the same on Python 3.10, where
tomllib is not in the standard library.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from clipcls.errors import UsageError
from clipcls.settings import DEFAULT_MODEL, ModelSettings, Precision, Runtime
from clipcls.userfiles import UnusableFile, locked, read_small_text, real_target, replace_text

CONFIG_ENV = "CLIPCLS_CONFIG"
FILE_NAME = "config.toml"
MAX_BYTES = 64 * 1024
BUILT_IN = "built-in default"
PRECISIONS = ", ".join(p.value for p in Precision)
RUNTIMES = ", ".join(r.value for r in Runtime)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C1 too: U+009B is CSI to a terminal
LINE = re.compile(
    r"""[ \t]*([A-Za-z0-9_-]+)[ \t]*=[ \t]*("(?:[^"\\\x00-\x1f\x7f]|\\.)*"|'[^'\x00-\x1f\x7f]*')"""
    r"[ \t]*(?:#[^\x00-\x08\x0a-\x1f\x7f]*)?"
)
ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
HEADER = "# clipcls settings: `clipcls config` shows them, `clipcls config set KEY VALUE` writes\n"


def _model(value: str) -> str | None:
    """Why a model value cannot be used, or None."""
    if not value.strip():
        return "must not be empty"
    if CONTROL.search(value):
        return "must be one line of text"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # bytes from argv or the environment that are not UTF-8
        return "must be UTF-8 text"
    return None


def _precision(value: str) -> str | None:
    return None if value in PRECISIONS.split(", ") else f"must be one of {PRECISIONS}"


def _runtime(value: str) -> str | None:
    return None if value in RUNTIMES.split(", ") else f"must be one of {RUNTIMES}"


@dataclass(frozen=True)
class Key:
    """One setting: its variable, its built-in value, and its check (the reason it is bad)."""

    env: str
    default: str
    problem: Callable[[str], str | None]


KEYS: dict[str, Key] = {
    "model": Key("CLIPCLS_MODEL", DEFAULT_MODEL, _model),
    "precision": Key("CLIPCLS_PRECISION", Precision.AUTO.value, _precision),
    "runtime": Key("CLIPCLS_RUNTIME", Runtime.AUTO.value, _runtime),
}


@dataclass(frozen=True)
class Setting:
    """A setting's effective value and where it came from (`$CLIPCLS_MODEL`, the file's line,
    or the built-in default)."""

    key: str
    value: str
    source: str


@dataclass(frozen=True)
class UserDefaults:
    """The config file (where it is, why there, whether it exists) and each setting."""

    path: Path
    path_source: str
    exists: bool
    settings: tuple[Setting, ...]

    def get(self, key: str) -> Setting:
        return next(s for s in self.settings if s.key == key)

    @property
    def model(self) -> str:
        return self.get("model").value

    @property
    def precision(self) -> Precision:
        return Precision(self.get("precision").value)

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.get("runtime").value)


def where(source: str) -> str:
    """A setting's source with the config file named: for a message read out of context."""
    return source.replace("config file", f"config file {config_path()[0]}", 1)


def config_path(environ: Mapping[str, str] = os.environ) -> tuple[Path, str]:
    """The config file and why it is that one: $CLIPCLS_CONFIG, else $XDG_CONFIG_HOME (an
    absolute one, as the XDG spec says), else the platform's per-user config folder."""
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).expanduser(), f"${CONFIG_ENV}"
    xdg = environ.get("XDG_CONFIG_HOME", "")
    home = Path.home()
    if os.path.isabs(xdg):
        folder, why = Path(xdg), "$XDG_CONFIG_HOME"
    elif sys.platform == "win32":
        folder, why = Path(environ.get("APPDATA") or home / "AppData" / "Roaming"), "%APPDATA%"
    elif sys.platform == "darwin":
        folder, why = home / "Library" / "Application Support", "the macOS default"
    else:
        folder, why = home / ".config", "the XDG default"
    return folder / "clipcls" / FILE_NAME, why


def _unquote(token: str) -> str:
    """A TOML string token's text ('literal' or "basic" with escapes); ValueError if bad."""
    if token.startswith("'"):
        return token[1:-1]
    out, i, body = [], 0, token[1:-1]
    while i < len(body):
        if body[i] != "\\":
            out.append(body[i])
            i += 1
            continue
        code = body[i + 1]
        if code in ESCAPES:
            out.append(ESCAPES[code])
            i += 2
            continue
        width = {"u": 4, "U": 8}.get(code)
        digits = body[i + 2 : i + 2 + width] if width else ""
        if not width or len(digits) != width or not re.fullmatch(r"[0-9A-Fa-f]+", digits):
            raise ValueError(f"unknown escape \\{code}")
        out.append(chr(int(digits, 16)))  # ValueError beyond U+10FFFF
        i += 2 + width
    return "".join(out)


def quoted(value: str) -> str:
    """value as a TOML basic string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped) + '"'


def _unknown(key: str) -> str:
    close = difflib.get_close_matches(key, list(KEYS), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown setting {key!r}; {hint}(settings: {', '.join(KEYS)})"


def parse_config(text: str, where: str) -> dict[str, tuple[str, int]]:
    """Each key's value and 1-based line; UsageError naming where (the file) and the line."""
    found: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip(" \t") or line.lstrip(" \t").startswith("#"):
            continue
        match = LINE.fullmatch(line)
        problem = None if match else 'expected key = "value" (strings only, no tables)'
        if match:
            key = match.group(1)
            try:
                value = _unquote(match.group(2))
            except (ValueError, IndexError) as error:
                value, problem = "", str(error)
            if problem is None and key in found:
                problem = f"{key} is set twice (first on line {found[key][1]})"
            if problem is None and key not in KEYS:
                problem = _unknown(key)
            if problem is None:
                bad = KEYS[key].problem(value)
                problem = f"{key} {bad}, not {value!r}" if bad else None
        if problem is not None:
            raise UsageError(f"config file {where}, line {number}: {problem}")
        found[key] = (value, number)
    return found


def read_config(path: Path) -> tuple[bool, dict[str, tuple[str, int]]]:
    """(whether the file exists, its settings); UsageError naming the file when unusable."""
    try:
        text = read_small_text(path, MAX_BYTES)
    except UnusableFile as error:
        raise UsageError(f"config file {path} {error}") from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise UsageError(f"cannot read config file {path}: {reason}") from None
    return (False, {}) if text is None else (True, parse_config(text, str(path)))


def user_defaults(environ: Mapping[str, str] = os.environ) -> UserDefaults:
    """The effective defaults; UsageError for a bad variable or config file, named."""
    path, path_source = config_path(environ)
    exists, found = read_config(path)
    settings = []
    for name, key in KEYS.items():
        given = environ.get(key.env, "")
        if given:
            bad = key.problem(given)
            if bad:
                raise UsageError(f"${key.env} {bad}, not {given!r}")
            settings.append(Setting(name, given, f"${key.env}"))
        elif name in found:
            value, line = found[name]
            settings.append(Setting(name, value, f"config file, line {line}"))
        else:
            settings.append(Setting(name, key.default, BUILT_IN))
    return UserDefaults(path, path_source, exists, tuple(settings))


def _checked_model(value: str) -> str:
    """A model as the file keeps it: a local-dir: folder made absolute (the file is read
    from any folder); a mistyped name refused now (UsageError), as -m would be."""
    from clipcls.engine.sources import LOCAL_DIR, check_model_name

    if value.startswith(LOCAL_DIR):
        value = LOCAL_DIR + os.path.abspath(os.path.expanduser(value.removeprefix(LOCAL_DIR)))
    check_model_name(ModelSettings(model=value))
    return value


def change_setting(key: str, value: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """Set key to value in the config file (None: remove it), keeping every other line; the
    file is read, changed and renamed into place under a lock, so two writers both land."""
    if key not in KEYS:
        raise UsageError(_unknown(key))
    bad = None if value is None else KEYS[key].problem(value)
    if bad:
        raise UsageError(f"{key} {bad}, not {value!r}")
    if key == "model" and value is not None:
        value = _checked_model(value)
    named = config_path(environ)[0]
    path = real_target(named)  # a symlinked dotfile is written through; its lock stays here
    try:
        with locked(named):
            _, found = read_config(path)  # a broken file is refused, not overwritten
            lines = (read_small_text(path, MAX_BYTES) or HEADER).split("\n")
            entry = None if value is None else f"{key} = {quoted(value)}"
            if key in found:
                lines[found[key][1] - 1 : found[key][1]] = [] if entry is None else [entry]
            elif entry is not None:
                lines[-1:] = [*lines[-1:], entry, ""] if lines[-1] else [entry, ""]
            replace_text(path, "\n".join(lines))
    except OSError as error:
        raise UsageError(f"cannot write config file {path}: {error.strerror or error}") from None
    return path
