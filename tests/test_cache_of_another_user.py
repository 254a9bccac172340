"""A user running clipcls against a cache folder another user owns (made with sudo, shared, or
under an unwritable home): every command works without the cache, saying so once and what to
do, or exits 2 with one line; never a traceback, never a cache file of theirs removed.

The commands run as `nobody` (root drops its privileges in the child). Where nobody cannot run
this Python (one under /root, say), they run as root stripped of every capability (setpriv), to
whom the cache belongs no more than to nobody: the caches are then nobody's. They skip where they
do not run as root."""

import contextlib
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE_IMAGES, write_tiny_model

if not hasattr(os, "geteuid") or os.geteuid() != 0:
    pytest.skip("running a command as another user needs root", allow_module_level=True)
try:
    NOBODY = pwd.getpwnam("nobody")
except KeyError:
    pytest.skip("no user `nobody` to run the commands as", allow_module_level=True)

DROP_CAPABILITIES = [
    "setpriv",
    "--securebits=+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked",
    "--bounding-set=-all",
    "--inh-caps=-all",
]
# Who runs the commands: nobody, or root without capabilities (as the shared fixture finds),
# and the home folder they cannot make.
RUN_AS = {"user": "nobody", "home": "/nonexistent"}
NOT_YOURS = "not writable by you: give a folder of your own with --cache-dir or $CLIPCLS_CACHE_DIR"


def as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY.pw_gid)
    os.setuid(NOBODY.pw_uid)


def stripped() -> bool:
    """Whether the commands run as root without capabilities (the caches are nobody's)."""
    return RUN_AS["user"] != "nobody"


def command(args: list[str], user: bool) -> tuple[list[str], object]:
    """The argv and preexec_fn that run args as the other user (or as root: user=False)."""
    if not user:
        return args, None
    return (DROP_CAPABILITIES + args, None) if stripped() else (args, as_nobody)


def theirs(path: Path) -> Path:
    """path (a tree), owned by the user the commands do not run as."""
    if stripped():
        for part in [path, *path.rglob("*")]:
            os.lchown(part, NOBODY.pw_uid, NOBODY.pw_gid)
    return path


def unwritable_home(shared: Path) -> Path:
    """A home folder the commands' user cannot make (its parent is the other user's)."""
    if not stripped():
        return Path("/nonexistent")  # / is root's
    homes = shared / "homes"
    homes.mkdir(mode=0o755, exist_ok=True)
    return theirs(homes) / "nonexistent"


def clipcls(
    *args: str, cache: Path | None, cwd: Path, user: bool = True
) -> subprocess.CompletedProcess:
    """One clipcls process, as nobody (or as root, user=False), with that cache folder (None:
    the default under an unwritable home)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": RUN_AS["home"],
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        **{name: os.environ[name] for name in ("LD_LIBRARY_PATH",) if name in os.environ},
    }
    if cache is not None:
        env["CLIPCLS_CACHE_DIR"] = str(cache)
    argv, preexec = command([sys.executable, "-m", "clipcls", *args], user)
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        preexec_fn=preexec,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def shared() -> Iterator[Path]:
    """A folder both users reach (pytest's own is private to root): a tiny model, photos, and
    a cache root filled; skipped where nobody cannot run this Python and clipcls."""
    root = Path(tempfile.mkdtemp(prefix="clipcls-users-"))
    try:
        root.chmod(0o777)
        for RUN_AS["user"] in ("nobody", "root without capabilities"):
            if runs_clipcls(root):
                break
        else:
            pytest.skip(f"neither nobody nor a root without capabilities runs {sys.executable}")
        write_tiny_model(root / "tiny")
        (root / "photos").mkdir()
        for name in ("chelsea.png", "coffee.png"):
            shutil.copy(SAMPLE_IMAGES / name, root / "photos" / name)
        for path in root.rglob("*"):
            path.chmod(0o777 if path.is_dir() else 0o644)
        RUN_AS["home"] = str(unwritable_home(root))
        filled = clipcls(*predict(root), cache=root / "filled", cwd=root, user=False)
        assert filled.returncode == 0, filled.stderr
        with contextlib.closing(sqlite3.connect(root / "filled" / "embeddings.sqlite3")) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # as a run leaves it: no -wal, -shm
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


PROBE = """import clipcls.cli, numpy, ssl
try:
    open({!r}, "w")
except PermissionError:
    raise SystemExit(0)
raise SystemExit(3)"""


def runs_clipcls(root: Path) -> bool:
    """Whether the commands' user can run this Python with clipcls, and is refused a file in a
    folder of the other user's."""
    folder = root / "probe"
    folder.mkdir(mode=0o755)
    argv, preexec = command([sys.executable, "-c", PROBE.format(str(theirs(folder) / "x"))], True)
    try:
        done = subprocess.run(
            argv,
            env={"PYTHONPATH": str(REPO), **os.environ},
            cwd=root,
            capture_output=True,
            preexec_fn=preexec,  # type: ignore[arg-type]
        ).returncode
    except OSError:  # its folder is private to root, or there is no setpriv
        done = -1
    shutil.rmtree(folder)
    return done == 0


def predict(root: Path) -> list[str]:
    return ["predict", str(root / "photos"), "-l", "cat,coffee", "-m", f"local-dir:{root / 'tiny'}"]


def roots_cache(shared: Path, name: str, mode: int) -> Path:
    """A copy of the filled cache, owned by root, its folder with that mode."""
    cache = shared / name
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(shared / "filled", cache)
    cache.chmod(mode)
    return theirs(cache)


def files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def one_line(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


@pytest.mark.slow
def test_a_cache_root_made_with_sudo_is_left_alone_and_the_run_says_so_once(
    shared: Path,
) -> None:
    cache = roots_cache(shared, "sudo-made", 0o755)
    before = files(cache)
    done = clipcls(*predict(shared), "-f", "csv", cache=cache, cwd=shared)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3  # the header and both photos
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].endswith(f"({NOT_YOURS})"), done.stderr
    assert files(cache) == before


def test_cache_info_and_clear_on_another_users_cache_are_one_line_each(shared: Path) -> None:
    cache = roots_cache(shared, "theirs", 0o755)
    before = files(cache)
    info = clipcls("cache", "info", cache=cache, cwd=shared)
    assert info.returncode == 2
    assert one_line(info).startswith("error: cannot open ") and NOT_YOURS in info.stderr
    cleared = clipcls("cache", "clear", cache=cache, cwd=shared)  # was a PermissionError
    assert cleared.returncode == 2
    assert one_line(cleared) == (
        f"error: cannot clear the embedding cache in {cache}: some of its files are not yours "
        "to remove\n"
    )
    assert files(cache) == before


def test_a_read_only_cache_file_in_a_shared_folder_is_not_cleared_half(shared: Path) -> None:
    cache = roots_cache(shared, "half", 0o777)  # anyone may remove files right in it
    (cache / "search" / "x").mkdir(parents=True, mode=0o700)  # but not in root's folders
    (cache / "search" / "x" / "keys.npy").write_bytes(b"root's")
    theirs(cache)
    before = files(cache)
    cleared = clipcls("cache", "clear", cache=cache, cwd=shared)
    assert cleared.returncode == 2 and "not yours to remove" in one_line(cleared)
    assert files(cache) == before  # was: the embeddings removed, then a traceback


def test_a_cache_folder_that_cannot_be_made_is_said_as_such(shared: Path) -> None:
    parent = shared / "roots-parent"
    parent.mkdir(mode=0o755, exist_ok=True)
    theirs(parent)
    info = clipcls("cache", "info", cache=parent / "cache", cwd=shared)
    assert info.returncode == 2 and "going on without it" not in one_line(info)
    assert NOT_YOURS in info.stderr
    cleared = clipcls("cache", "clear", cache=parent / "cache", cwd=shared)
    assert cleared.returncode == 0
    assert cleared.stderr == f"no embedding cache in {parent / 'cache'}: nothing to remove\n"


@pytest.mark.slow
@pytest.mark.parametrize("where", ["unwritable-home", "roots-0700"])
def test_every_model_command_works_or_exits_2_in_one_line(shared: Path, where: str) -> None:
    cache = None if where == "unwritable-home" else roots_cache(shared, "private", 0o700)
    out = shared / f"out-{where}"
    out.mkdir(exist_ok=True)
    out.chmod(0o777)
    model = ["-m", f"local-dir:{shared / 'tiny'}"]
    photos = str(shared / "photos")
    runs = [
        predict(shared),
        ["label", photos, "-l", "cat,coffee", *model, "-o", str(out / "labels.csv")],
        ["search", photos, "a cat", *model],
        ["similar", str(shared / "photos" / "chelsea.png"), photos, *model],
        ["dedupe", photos, *model],
        ["templates"],
        ["doctor"],
    ]
    for args in runs:
        done = clipcls(*args, cache=cache, cwd=out)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        if done.returncode == 2 and cache is not None:  # roots 0700: refused at once
            assert one_line(done).startswith("error: "), done.stderr
            assert not (out / "labels.csv").exists()
            continue
        assert done.returncode == 0, (args, done.stderr)
        said = [line for line in done.stderr.splitlines() if "embedding cache" in line]
        assert len(said) <= 1 and all(NOT_YOURS in line for line in said), done.stderr
    if cache is None:
        assert len((out / "labels.csv").read_text().splitlines()) == 3
