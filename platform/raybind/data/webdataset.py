"""WebDataset shards: `.tar` files whose members `<key>.<suffix>` group into one sample per key.

How a sample becomes a manifest row (what decoding sees):

- `<key>.txt` is the caption; `<key>.json` is an object whose `text` is the caption (a string, a list, or a
  mapping of caption views, exactly as a manifest's `text` column) and whose `id`, `label`, `fold` carry
  over. Without an `id` the sample's key is its id.
- A media member belongs to the modality its suffix names: `<key>.depth.png` is depth, `<key>.thermal.jpg`
  thermal; otherwise by extension (`.mp4` video, `.wav`/`.flac` audio, `.jpg`/`.png` image, `.npy` depth).
  Its bytes are decoded from memory; a quarantine record names it `<shard>#<member>`.

Ray Data reads shards where they are (`ray.data.read_webdataset`, one shard per read task, bytes undecoded).
Row counts come from `shardindex.json` (wids' shard index: `{"shardlist": [{"url", "nsamples"}]}`), which
`raybind build --format webdataset` writes; without one, read tasks count the samples once at start.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders.modalities import MODALITIES, REGISTRY
from raybind import storage
from raybind.data.batch_format import ID, PASSTHROUGH, TEXT

KEY, URL = "__key__", "__url__"         # the columns Ray's WebDataset reader adds to every sample
SHARD_INDEX = "shardindex.json"
INDEX_KIND = "wids-shard-index-v1"
ROW_FIELDS = (ID, TEXT, *PASSTHROUGH)   # what a sample's JSON member carries into its row
PEEK_BYTES = 64 * 2**20                 # the driver reads at most this much of the first shard for its columns
_KEY_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


class SampleError(Exception):
    """A sample that cannot become a row (no caption, two files for one tower, unreadable JSON)."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(reason)
        self.uri, self.reason = uri, reason


@dataclass(frozen=True)
class Member:
    """One media file inside a shard: its name for messages (`<shard>#<member>`) and its bytes."""

    name: str
    data: bytes

    @property
    def suffix(self) -> str:
        """The member's last extension with its dot (`.png`): what decoders that care about format read."""
        return "." + self.name.rsplit(".", 1)[-1].lower()


def split_member(name: str) -> tuple[str, str] | None:
    """`dir/key.depth.png` -> (`dir/key`, `depth.png`): the key is the name up to its base name's first dot
    (the WebDataset rule Ray's reader groups by); None for a name without one."""
    folder, _, base = name.rpartition("/")
    stem, dot, suffix = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{folder}/{stem}" if folder else stem), suffix


def suffix_modality(suffix: str) -> str | None:
    """The modality a member's suffix belongs to: named (`depth.png`), or by its extension; None for
    captions and anything else."""
    parts = suffix.lower().split(".")
    if parts[0] in REGISTRY and len(parts) > 1:
        return parts[0]
    extension = "." + parts[-1]
    owners = [name for name, kind in REGISTRY.items() if extension in kind.extensions]
    return owners[0] if len(owners) == 1 else None


def member_suffix(modality: str, extension: str) -> str:
    """The suffix a writer gives a modality's file: the bare extension when it names the modality already
    (`mp4`), else `<modality>.<ext>` (`depth.png`)."""
    extension = extension.lower().lstrip(".")
    return extension if suffix_modality(extension) == modality else f"{modality}.{extension}"


def sample_key(row_id: str) -> str:
    """A tar key for a row id: the id itself when it is a safe key (no dots or slashes), else its hash
    (the id is kept in the sample's JSON either way)."""
    return row_id if _KEY_SAFE.match(row_id) else hashlib.sha1(row_id.encode()).hexdigest()[:24]


def shard_uri(url: str, base_dir: str) -> str:
    """The user-facing URI of a shard Ray names by its filesystem path (`bucket/x.tar` -> `s3://bucket/x.tar`)."""
    if storage.is_remote(base_dir) and "://" not in url:
        return f"{base_dir.split('://', 1)[0]}://{url}"
    return url


def _present(value: Any) -> bool:
    return isinstance(value, (bytes, bytearray, np.bytes_)) or (isinstance(value, str) and value != "")


def manifest_row(sample: dict[str, Any], base_dir: str) -> dict[str, Any]:
    """A sample as a manifest row: id, text, label/fold, and a `Member` per media column; raises
    `SampleError` naming the shard and key when the sample cannot be one."""
    key = str(sample[KEY])
    shard = shard_uri(str(sample.get(URL, "")), base_dir)
    where = f"{shard}#{key}"
    row: dict[str, Any] = {ID: key}
    for suffix, value in sample.items():
        if suffix.startswith("__") or not _present(value):
            continue
        data = bytes(value) if not isinstance(value, str) else value.encode()
        if suffix == "txt":
            row.setdefault(TEXT, data.decode("utf-8", errors="replace"))
        elif suffix == "json":
            try:
                fields = json.loads(data)
            except (ValueError, UnicodeDecodeError) as error:
                raise SampleError(f"{where}.json", f"unreadable JSON: {error}") from None
            if not isinstance(fields, dict):
                raise SampleError(f"{where}.json", "the JSON member must be an object (with 'text', 'id', ...)")
            row.update({name: fields[name] for name in ROW_FIELDS if fields.get(name) is not None})
        elif (modality := suffix_modality(suffix)) is not None:
            if modality in row:
                raise SampleError(where, f"two {modality} files: {row[modality].name}, {key}.{suffix}")
            row[modality] = Member(f"{where}.{suffix}", data)
    row[ID] = str(row[ID])
    return row


def first_sample_columns(shard: str, limit: int = PEEK_BYTES) -> list[str]:
    """The row columns the first sample of a shard yields (id, text, label, fold, media), from its first
    members only (at most `limit` bytes of the shard are read)."""
    fs, path = storage.resolve(shard)
    suffixes: list[str] = []
    fields: set[str] = set()
    first_key = None
    try:
        with fs.open_input_stream(path) as stream, tarfile.open(fileobj=_Capped(stream, limit), mode="r|*") as tar:
            for info in tar:
                parts = split_member(info.name) if info.isreg() else None
                if parts is None:
                    continue
                if first_key is not None and parts[0] != first_key:
                    break
                first_key, suffix = parts
                suffixes.append(suffix)
                if suffix == "txt":
                    fields.add(TEXT)
                elif suffix == "json":
                    try:
                        content = json.loads(tar.extractfile(info).read())
                    except (ValueError, UnicodeDecodeError):
                        content = None   # the sample is quarantined when read; the shard's columns stay unknown
                    fields.update(name for name in ROW_FIELDS if isinstance(content, dict) and name in content)
    except (tarfile.TarError, OSError) as error:
        raise SampleError(shard, f"cannot read as a WebDataset shard (tar): {error}") from None
    return ([ID] + [name for name in ROW_FIELDS if name in fields and name != ID]
            + [m for m in MODALITIES if any(suffix_modality(s) == m for s in suffixes)])


class _Capped(io.RawIOBase):
    """A read-only stream that ends after `limit` bytes (peeking never downloads a whole shard)."""

    def __init__(self, stream, limit: int) -> None:
        self.stream, self.left = stream, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left <= 0:
            return 0
        data = self.stream.read(min(len(buffer), self.left))
        buffer[:len(data)] = data
        self.left -= len(data)
        return len(data)


def index_counts(files: Iterable[str], base_dir: str) -> list[int] | None:
    """Samples of each of `files` from the shard index beside them; None when there is none or it misses one."""
    index_uri = storage.join(base_dir, SHARD_INDEX)
    try:
        if not storage.exists(index_uri):
            return None
        index = json.loads(storage.read_text(index_uri))
        counts = {shard_name(entry["url"]): int(entry["nsamples"]) for entry in index["shardlist"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    names = [shard_name(uri) for uri in files]
    return [counts[name] for name in names] if all(name in counts for name in names) else None


def shard_name(uri: str) -> str:
    """A shard's file name (no folder, no query): what the index's `url` entries are matched by."""
    return uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def write_index(base_dir: str, shards: list[tuple[str, int]], extra: dict[str, Any]) -> None:
    """wids' shard index (file names relative to the folder), plus RayBind's build summary under `raybind`."""
    index = {"__kind__": INDEX_KIND, "wids_version": 1,
             "shardlist": [{"url": name, "nsamples": count} for name, count in sorted(shards)], "raybind": extra}
    storage.write_text(storage.join(base_dir, SHARD_INDEX), json.dumps(index, indent=1))


class ShardWriter:
    """Streams one shard: each `add` appends a sample's members (adjacent, as WebDataset requires); nothing
    but the sample being added is held in memory. Members carry no clock, so a rewrite is byte-identical."""

    def __init__(self, uri: str) -> None:
        fs, path = storage.resolve(uri)
        parent = path.rsplit("/", 1)[0]
        if not storage.is_remote(uri):
            fs.create_dir(parent, recursive=True)
        self._stream = fs.open_output_stream(path)
        self._tar = tarfile.open(fileobj=self._stream, mode="w|", format=tarfile.USTAR_FORMAT)

    def add(self, members: list[tuple[str, bytes]]) -> None:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            self._tar.addfile(info, io.BytesIO(data))

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tar.close()
        self._stream.close()
