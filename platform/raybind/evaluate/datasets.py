"""Benchmark layouts users already have on disk (or in S3), turned into evaluation manifests.

    msrvtt   <root>/MSRVTT_JSFUSION_test.csv   the 1k-A test split: columns video_id, sentence (others ignored)
             <root>/videos/<video_id>.mp4      one clip per row
             -> text-to-video retrieval (LanguageBind's MSR-VTT table: R@1/5/10, MdR, MnR)
    esc50    <root>/meta/esc50.csv             columns filename, fold, target, category (others ignored)
             <root>/audio/<filename>           the 2,000 five-second clips
             -> zero-shot audio classification, per fold and overall
    folders  <root>/<modality>/<class>/<name>.<ext>   modality: image, depth, thermal, video or audio
             e.g. NYU-D: image/ and depth/ (16-bit PNG in mm, or .npy in metres); LLVIP: image/ and thermal/
             -> zero-shot classification per modality; files with the same <class>/<name> in two modality
                folders are one row, which pairs them for emergent retrieval

A malformed layout (missing file or column, files outside class folders) fails with a `BenchmarkError`
naming what is wrong. Media files that are missing or broken are not checked here: the evaluation
quarantines those rows and evaluates the rest.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv

from encoders.modalities import MODALITIES
from raybind import storage
from raybind.data.batch_format import FOLD, ID, LABEL, TEXT
from raybind.errors import InputError

MSRVTT_CSV = "MSRVTT_JSFUSION_test.csv"
ESC50_CSV = "meta/esc50.csv"


class BenchmarkError(InputError):
    """A benchmark folder does not have the documented layout."""


@dataclass(frozen=True)
class Benchmark:
    """A benchmark layout read as an evaluation manifest, with its class order and default tasks."""

    name: str
    table: pa.Table                       # an evaluation manifest: id, text, [label, fold], media URIs
    classes: tuple[str, ...] | None       # class names in the benchmark's order (classification)
    tasks: tuple[str, ...]                # what this benchmark measures by default


def _read_csv(root: str, relative: str, required: tuple[str, ...], benchmark: str) -> pa.Table:
    uri = storage.join(root, relative)
    if not storage.exists(uri):
        raise BenchmarkError(f"{benchmark}: {storage.redact(uri)} not found (expected layout: see raybind.evaluate.datasets)")
    try:
        table = pacsv.read_csv(io.BytesIO(storage.read_bytes(uri)),
                               convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    except pa.ArrowException as error:
        raise BenchmarkError(f"{benchmark}: cannot read {storage.redact(uri)} as CSV: {error}") from None
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise BenchmarkError(f"{benchmark}: {storage.redact(uri)} lacks column(s) {missing}; it has "
                             f"{table.column_names}")
    if table.num_rows == 0:
        raise BenchmarkError(f"{benchmark}: {storage.redact(uri)} has no rows")
    return table


def _unique(ids: list[str], benchmark: str, what: str) -> None:
    seen: set[str] = set()
    for value in ids:
        if value in seen:
            raise BenchmarkError(f"{benchmark}: {what} {value!r} appears twice")
        seen.add(value)


def msrvtt(root: str) -> Benchmark:
    """MSR-VTT 1k-A test: one caption per clip for text-to-video retrieval; video ids must be unique."""
    table = _read_csv(root, MSRVTT_CSV, ("video_id", "sentence"), "msrvtt")
    ids = [str(v) for v in table.column("video_id").to_pylist()]
    _unique(ids, "msrvtt", "video_id")
    videos = [storage.join(root, "videos", f"{v}.mp4") for v in ids]
    rows = pa.table({ID: ids, TEXT: [str(s) for s in table.column("sentence").to_pylist()], "video": videos})
    return Benchmark("msrvtt", rows, None, ("retrieval",))


def _class_name(raw: str) -> str:
    return raw.replace("_", " ").strip()


def esc50(root: str) -> Benchmark:
    """ESC-50: each clip with its category as caption and label, and its fold; classes in `target` order."""
    table = _read_csv(root, ESC50_CSV, ("filename", "fold", "target", "category"), "esc50")
    files = [str(f) for f in table.column("filename").to_pylist()]
    _unique(files, "esc50", "filename")
    categories = [_class_name(str(c)) for c in table.column("category").to_pylist()]
    targets = table.column("target").to_pylist()
    by_target: dict[int, str] = {}
    for target, category in zip(targets, categories):
        if by_target.setdefault(int(target), category) != category:
            raise BenchmarkError(f"esc50: target {target} names two categories: {by_target[int(target)]!r} "
                                 f"and {category!r}")
    rows = pa.table({ID: [posixpath.splitext(f)[0] for f in files], TEXT: categories, LABEL: categories,
                     FOLD: [str(f) for f in table.column("fold").to_pylist()],
                     "audio": [storage.join(root, "audio", f) for f in files]})
    return Benchmark("esc50", rows, tuple(by_target[t] for t in sorted(by_target)), ("classification",))


def folders(root: str) -> Benchmark:
    """A `<modality>/<class>/<file>` tree: one row per `<class>/<name>`, pairing same-named files across
    modality folders; classes sorted by name."""
    files = storage.list_files(root)
    if not files:
        raise BenchmarkError(f"folders: {storage.redact(root)} is empty or missing")
    base = storage.resolve(root)[1].rstrip("/")
    items: dict[str, dict[str, str]] = {}
    for uri in files:
        relative = storage.resolve(uri)[1][len(base) + 1:]
        parts = relative.split("/")
        if parts[0] not in MODALITIES:
            raise BenchmarkError(f"folders: {relative}: the first folder must be a modality "
                                 f"({', '.join(MODALITIES)})")
        if len(parts) != 3:
            raise BenchmarkError(f"folders: {relative}: expected <modality>/<class>/<file>")
        modality, label, name = parts
        key = f"{label}/{posixpath.splitext(name)[0]}"
        items.setdefault(key, {})[modality] = uri
    modalities = sorted({m for item in items.values() for m in item})
    keys = sorted(items)
    labels = [_class_name(k.split("/")[0]) for k in keys]
    columns: dict[str, list] = {ID: keys, TEXT: labels, LABEL: labels}
    for modality in modalities:  # a row missing one modality's file is quarantined at decode
        columns[modality] = [items[k].get(modality) for k in keys]
    return Benchmark("folders", pa.table(columns), tuple(sorted(set(labels))),
                     ("classification", "emergent", "arithmetic"))


BUILDERS: dict[str, Callable[[str], Benchmark]] = {"msrvtt": msrvtt, "esc50": esc50, "folders": folders}


def build(name: str, root: str) -> Benchmark:
    """The named benchmark read from `root` (a local root made absolute, so its media URIs are too)."""
    if name not in BUILDERS:
        raise BenchmarkError(f"unknown benchmark {name!r}; valid: {sorted(BUILDERS)}")
    return BUILDERS[name](storage.absolute(root))
