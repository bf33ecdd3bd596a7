"""Where a run's outputs live: a local folder, or a filesystem URI through `pyarrow.fs`.

    storage = Storage("s3://bucket/raykd")      # or gs://..., file:///shared/raykd, "outputs"
    storage.uri("adam/train")                   # Ray Train checkpoints, written there directly
    storage.local                               # the driver's mirror of the driver-side files
    storage.pull("adam", exclude=("train",))    # remote -> mirror (newer or missing files)
    storage.push("candidates")                  # mirror -> remote

With a URI, the pieces written by many processes go to the URI directly: Ray Train
checkpoints (`RunConfig(storage_path=...)`), the teacher-score cache (its actors write parts
through pyarrow) and MLflow artefacts (the experiment's artifact location). The pieces the
driver writes itself (the resolved recipe, `done.json`, scored groups, candidate groups,
stage students, results) are written into a local mirror and synced to the URI after every
step of a stage, and pulled from it when a run starts, so that a resubmission on another
node resumes from the URI alone. The mirror is `$RAYKD_LOCAL_DIR/<hash of the URI>`
(default `<tmp>/raykd-storage`): keep it the same path on every node, as recorded paths
(a stage's student, the candidates a scoring manifest read) are paths inside it. The corpus
embedding cache stays in the mirror, unsynced: it is recomputed where missing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs as pafs

from raykd.errors import ConfigError
from raykd.fingerprint import stable_hash

# Written last, so that a reader never sees a marker before the files it vouches for.
MARKERS = ("done.json", "_mining.yaml", "results.json", "recipe.yaml")

# Written into every storage folder raykd creates: Ray's upload of a working dir skips it.
RAYIGNORE_ALL = "# raykd outputs: never uploaded with `ray job submit --working-dir`\n*\n"


def is_uri(path: str | os.PathLike) -> bool:
    """A filesystem URI (`s3://...`, `file:///...`) rather than a local path."""
    return "://" in os.fspath(path)


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """A temporary sibling of `path` to write a file or a folder into, renamed onto `path`
    when the block succeeds and removed when it fails, so that readers never see half of it.
    A folder that exists by then (another process finished the same work first) is kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        if not (tmp.is_dir() and path.is_dir()):
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()


def cached_artifact(root: str | os.PathLike, name: str, key, build: Callable[[Path], object],
                    *, marker: str) -> tuple[Path, bool]:
    """The folder `root/<name>-<hash of key>`, built once: `build(folder)` runs unless
    `folder/marker` exists, and must leave that marker (written last) behind. Returns the
    folder and whether this call built it."""
    folder = Path(root) / f"{name}-{stable_hash(key)}"
    if (folder / marker).exists():
        return folder, False
    build(folder)
    if not (folder / marker).exists():
        raise RuntimeError(f"building {folder} left no {marker}")
    return folder, True


def mirror_dir(root: str) -> Path:
    """The local mirror of a storage URI on this node."""
    base = os.environ.get("RAYKD_LOCAL_DIR") or os.path.join(tempfile.gettempdir(),
                                                              "raykd-storage")
    return Path(base).resolve() / hashlib.sha1(root.encode()).hexdigest()[:16]


class Storage:
    """A run storage root: `uri()` for the writers that reach it directly, `local` plus
    `pull`/`push` for the files the driver writes."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        self.remote = is_uri(self.root)
        if not self.remote:
            self.fs, self.local = None, Path(self.root).resolve()
            self.base = str(self.local)
            return
        try:
            self.fs, self.base = pafs.FileSystem.from_uri(self.root)
        except (ValueError, OSError, NotImplementedError) as err:  # ArrowInvalid is a ValueError
            raise ConfigError("storage", f"{self.root!r} is not a filesystem pyarrow can "
                                         f"open: {err}") from err
        self.base = self.base.rstrip("/")
        self.local = mirror_dir(self.root)

    def __repr__(self) -> str:
        return f"Storage({self.root!r}, local={str(self.local)!r})"

    def create_local(self) -> None:
        """Create the local root (a local storage, or a URI's mirror). A folder created here
        gets a `.rayignore` of `*`: whatever its name and wherever it is (inside a checkout,
        `--storage runs`), `ray job submit --working-dir .` leaves it out of the upload. An
        existing folder is left as it is."""
        if self.local.exists():
            return
        self.local.mkdir(parents=True, exist_ok=True)
        (self.local / ".rayignore").write_text(RAYIGNORE_ALL)

    def uri(self, rel: str, *, query: bool = True) -> str:
        """`rel` under the root: a URI (query options kept unless `query=False`) or a local
        absolute path."""
        if not self.remote:
            return str(self.local / rel)
        head, _, options = self.root.partition("?")
        out = f"{head.rstrip('/')}/{rel.strip('/')}"
        return f"{out}?{options}" if options and query else out

    def pull(self, rel: str, exclude: tuple[str, ...] = ()) -> int:
        """Copy the files under `rel` that are missing locally or newer remotely; returns
        how many. A no-op for local storage."""
        if not self.remote:
            return 0
        return _copy_tree(self.fs, f"{self.base}/{rel}", pafs.LocalFileSystem(),
                          str(self.local / rel), exclude)

    def push(self, rel: str, exclude: tuple[str, ...] = ()) -> int:
        """Copy the local files under `rel` that are missing remotely or newer locally."""
        if not self.remote:
            return 0
        return _copy_tree(pafs.LocalFileSystem(), str(self.local / rel), self.fs,
                          f"{self.base}/{rel}", exclude)


    def files(self, rel: str) -> list[str]:
        """The files under `rel` on the root itself (the URI when remote), relative to it."""
        fs = self.fs if self.remote else pafs.LocalFileSystem()
        return sorted(_files(fs, f"{self.base}/{rel}"))

    def remove(self, rel: str) -> None:
        """Delete `rel` (a folder) locally and, when remote, on the URI too."""
        shutil.rmtree(self.local / rel, ignore_errors=True)
        if self.remote and self.fs.get_file_info(f"{self.base}/{rel}").type != \
                pafs.FileType.NotFound:
            self.fs.delete_dir(f"{self.base}/{rel}")


def _files(fs: pafs.FileSystem, root: str) -> dict[str, pafs.FileInfo]:
    """Files under `root` by their path relative to it (empty when `root` is absent)."""
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return {i.path[len(root):].lstrip("/"): i for i in infos if i.type == pafs.FileType.File}


def _copy_tree(src_fs, src: str, dst_fs, dst: str, exclude: tuple[str, ...]) -> int:
    src, dst = src.rstrip("/"), dst.rstrip("/")
    have = _files(dst_fs, dst)
    todo = []
    for rel, info in _files(src_fs, src).items():
        if any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in exclude):
            continue
        if rel.rsplit("/", 1)[-1].startswith("."):  # a writer's temporary
            continue
        old = have.get(rel)
        if (old is not None and old.size == info.size and info.mtime is not None
                and old.mtime is not None and info.mtime <= old.mtime):
            continue
        todo.append(rel)
    todo.sort(key=lambda rel: (rel.rsplit("/", 1)[-1] in MARKERS, rel))
    for rel in todo:
        target = f"{dst}/{rel}"
        dst_fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with src_fs.open_input_stream(f"{src}/{rel}") as reader, \
                dst_fs.open_output_stream(target) as writer:
            while chunk := reader.read(8 << 20):
                writer.write(chunk)
    return len(todo)
