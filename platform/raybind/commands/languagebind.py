"""What `raybind import-languagebind` and `raybind export-languagebind` share: LanguageBind folders from where
they are (a local folder, s3:// through raybind.storage, or a hub id where the hub is reachable) and outputs
written locally first, then copied to s3:// when the output is remote."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from raybind import storage
from raybind.errors import InputError


@contextlib.contextmanager
def local_sources(sources: list[str]) -> Iterator[list[str]]:
    """Local folders for `sources`: s3:// ones copied into temporary folders (deleted afterwards), hub ids
    downloaded into the Hugging Face cache (`huggingface_hub.snapshot_download`; needs the hub reachable)."""
    from encoders.languagebind import LanguageBindError, resolve_source

    with contextlib.ExitStack() as stack:
        folders = []
        for source in sources:
            try:
                if storage.is_remote(source):
                    folders.append(stack.enter_context(storage.local_dir(source)))
                else:
                    folders.append(resolve_source(source))
            except (FileNotFoundError, LanguageBindError) as error:
                raise InputError(f"--input {storage.redact(source)}: {error}") from None
            except Exception as error:   # the hub unreachable, a network error: one line naming the source
                raise InputError(f"--input {storage.redact(source)} could not be fetched: {error}") from None
        yield folders


@contextlib.contextmanager
def local_output(uri: str) -> Iterator[Path]:
    """A local folder to write `uri` into: the folder itself, or a temporary one copied to s3:// on success."""
    if not storage.is_remote(uri):
        path = Path(uri).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    import pyarrow.fs as pafs

    with tempfile.TemporaryDirectory(prefix="raybind-languagebind-") as tmp:
        yield Path(tmp)
        fs, path = storage.resolve(uri)
        fs.create_dir(path, recursive=True)
        pafs.copy_files(tmp, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
