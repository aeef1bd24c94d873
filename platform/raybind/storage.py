"""URIs for everything the platform reads and writes: local paths or `s3://bucket/key[?endpoint_override=...]`.

pyarrow's filesystems do the I/O (credentials come from the standard AWS environment or instance role,
never from configs). Secrets that someone puts in a URI query are redacted before any URI is logged or
reported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import stat
import tempfile
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Iterator, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow.fs as pafs

from raybind.errors import InputError

_SECRET_KEYS = {"access_key", "secret_key", "session_token"}
log = logging.getLogger(__name__)
T = TypeVar("T")

# What media and manifests may be read from, besides local paths and file:// (pyarrow's filesystems).
# http(s) is not among them: rows that name it are quarantined as an unsupported scheme.
READ_SCHEMES = ("s3",)


class NotReadable(Exception):
    """Something is at the URI, but not a file this process can read; `reason` says what it is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_remote(uri: str) -> bool:
    """True for a URI with a scheme (s3://...); plain paths and file:// URIs are local."""
    return "://" in uri and not uri.startswith("file://")


def unsupported_scheme(uri: str) -> str | None:
    """The URI's scheme when RayBind cannot read it (e.g. `http`), else None."""
    if not is_remote(uri):
        return None
    scheme = urlsplit(uri).scheme.lower()
    return None if scheme in READ_SCHEMES else scheme or uri.split("://", 1)[0]


def _split_query(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), parts.query


def redact(uri: str) -> str:
    """The URI with credential query parameters masked."""
    if not is_remote(uri):
        return uri
    base, query = _split_query(uri)
    pairs = [(k, "***" if k in _SECRET_KEYS else v) for k, v in parse_qsl(query)]
    return base + ("?" + urlencode(pairs, safe=":/") if pairs else "")


@lru_cache(maxsize=32)
def _filesystem(scheme_netloc_query: str) -> pafs.FileSystem:
    fs, _ = pafs.FileSystem.from_uri(scheme_netloc_query)
    return fs


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a URI or local path."""
    if not is_remote(uri):
        return pafs.LocalFileSystem(), str(Path(uri.removeprefix("file://")).expanduser().resolve())
    base, query = _split_query(uri)
    parts = urlsplit(base)
    try:
        fs = _filesystem(urlunsplit((parts.scheme, parts.netloc, "", query, "")))
    except (ValueError, TypeError) as error:   # pyarrow.lib.ArrowInvalid: an unknown scheme or option
        raise InputError(f"cannot use storage {redact(uri)}: {error}") from None
    return fs, (parts.netloc + parts.path).rstrip("/")


def absolute(uri: str) -> str:
    """Local paths made absolute (a run dir must not depend on the working directory); URIs unchanged."""
    return uri if is_remote(uri) else str(Path(uri.removeprefix("file://")).expanduser().resolve())


# Where Ray unpacks a job's `--working-dir`: deleted with the Ray session, so nothing may be kept there.
RAY_PACKAGE_MARKERS = ("/runtime_resources/working_dir_files/", "/runtime_resources/py_modules_files/")


def durable_output(uri: str, field: str) -> str:
    """`absolute(uri)` for something a job keeps (a run folder, a report, shards), refused with a message
    naming `field` when it would land inside Ray's unpacked working-dir package, as a relative path does in a
    submitted job."""
    resolved = absolute(uri)
    if not is_remote(resolved) and any(marker in resolved + "/" for marker in RAY_PACKAGE_MARKERS):
        raise InputError(f"{field}: {uri} resolves to {resolved}, inside the Ray job's working-dir package, "
                         "which Ray deletes with the session: give an absolute path or s3://")
    return resolved


def join(base: str, *names: str) -> str:
    """Append path components, keeping any query (endpoint) of a remote base."""
    if not is_remote(base):
        return str(Path(base).joinpath(*names))
    path, query = _split_query(base)
    joined = posixpath.join(path.rstrip("/"), *names)
    return joined + (f"?{query}" if query else "")


def parent(uri: str) -> str:
    """The folder that holds `uri` (a local path made absolute; a remote URI keeps its query)."""
    if not is_remote(uri):
        return str(Path(uri).expanduser().resolve().parent)
    path, query = _split_query(uri)
    return posixpath.dirname(path.rstrip("/")) + (f"?{query}" if query else "")


def resolve_relative(uri: str, base_dir: str) -> str:
    """Media URIs in a manifest may be relative to the manifest's folder."""
    if is_remote(uri) or os.path.isabs(uri) or uri.startswith("file://"):
        return uri
    return join(base_dir, uri)


def exists(uri: str) -> bool:
    """Whether a file or folder is at `uri`."""
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    """Whether `uri` is a folder (False when it is a file or absent)."""
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def size(uri: str) -> int:
    """File size in bytes; FileNotFoundError when absent."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"not found: {redact(uri)}")
    return int(info.size or 0)


def file_size(uri: str) -> int:
    """The size of a regular, readable file; FileNotFoundError when nothing is there, `NotReadable` naming
    what is there otherwise (a folder, a device, a socket, a named pipe, a file without read permission).
    A named pipe is refused before anything opens it: an open that blocks inside a decoder can hold the
    decoder's own locks, stalling every later row of the worker, not just its own."""
    if is_remote(uri):
        fs, path = resolve(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"not found: {redact(uri)}")
        if info.type == pafs.FileType.Directory:
            raise NotReadable("a folder (prefix), not a file")
        return int(info.size or 0)
    path = resolve(uri)[1]
    try:
        mode = os.stat(path).st_mode   # follows symlinks: what a reader would open
    except FileNotFoundError:
        raise FileNotFoundError(f"not found: {uri}") from None
    except PermissionError:
        raise NotReadable("permission denied (a folder on its path cannot be searched)") from None
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISFIFO, "a named pipe (FIFO)")):
        if test(mode):
            raise NotReadable(f"{what}, not a file")
    if not os.access(path, os.R_OK):
        raise NotReadable("permission denied (no read permission)")
    return os.path.getsize(path)


class Unreadable(Exception):
    """A storage read that kept failing after its retries; `reason` says how often and the last error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Errors that say what is (not) there: retrying cannot change them.
_PERMANENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def with_retries(read: Callable[[], T], uri: str, attempts: int, backoff_s: float) -> T:
    """`read()` retried on transient storage errors (throttling, resets, 5xx: pyarrow raises them as
    OSError, after the AWS SDK's own few quick retries) with exponential backoff, `attempts` tries in all.
    One log line when a burst of retries starts and one when it ends; `Unreadable` after the last try."""
    for attempt in range(1, attempts + 1):
        try:
            value = read()
        except _PERMANENT:
            raise
        except OSError as error:
            if attempt == 1 and attempts > 1:
                log.warning("%s: %s; retrying, up to %d tries", redact(uri), _short(error), attempts)
            if attempt == attempts:
                raise Unreadable(f"unreadable after {attempts} tries: {_short(error)}") from None
            time.sleep(backoff_s * 2 ** (attempt - 1))
            continue
        if attempt > 1:
            log.warning("%s: read after %d tries", redact(uri), attempt)
        return value
    raise AssertionError("unreachable")


def _short(error: Exception) -> str:
    return " ".join(str(error).split())[:300]


def read_bytes(uri: str) -> bytes:
    """The whole file; FileNotFoundError (URI redacted) when absent."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"not found: {redact(uri)}")
    with fs.open_input_stream(path) as stream:
        return stream.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write the whole file, creating its parent folders first."""
    fs, path = resolve(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def write_text(uri: str, text: str) -> None:
    """`write_bytes` of the UTF-8 encoded text."""
    write_bytes(uri, text.encode())


def read_text(uri: str) -> str:
    """`read_bytes` decoded as UTF-8."""
    return read_bytes(uri).decode()


def list_files(uri: str) -> list[str]:
    """Files directly or recursively under a folder URI, as URIs (sorted)."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File)
    if not is_remote(uri):
        return files
    _, query = _split_query(uri)
    scheme = urlsplit(uri).scheme
    return [f"{scheme}://{f}" + (f"?{query}" if query else "") for f in files]


def delete_dir(uri: str) -> None:
    """Delete a folder and everything under it; an absent one is fine, so stale output clears unconditionally."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def delete(uri: str) -> None:
    """Delete one file; an absent one is fine."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


@contextlib.contextmanager
def local_path(uri: str, suffix: str = "") -> Iterator[str]:
    """A local file path for `uri` (the file itself when local, a temporary copy when remote).

    Decoders such as OpenCV need a path; remote media is fetched once into a temp file.
    """
    if not is_remote(uri):
        path = resolve(uri)[1]
        if not os.path.exists(path):
            raise FileNotFoundError(f"not found: {uri}")
        yield path
        return
    with tempfile.NamedTemporaryFile(suffix=suffix or Path(urlsplit(uri).path).suffix) as tmp:
        tmp.write(read_bytes(uri))
        tmp.flush()
        yield tmp.name


@contextlib.contextmanager
def local_dir(uri: str) -> Iterator[str]:
    """A local folder for a folder URI (the folder itself when local, a temporary copy when remote), e.g.
    a checkpoint that loaders read file by file."""
    if not is_remote(uri):
        path = resolve(uri)[1]
        if not os.path.isdir(path):
            raise FileNotFoundError(f"not a folder: {uri}")
        yield path
        return
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"not found: {redact(uri)}")
    with tempfile.TemporaryDirectory(prefix="raybind-") as tmp:
        pafs.copy_files(path, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        yield tmp
