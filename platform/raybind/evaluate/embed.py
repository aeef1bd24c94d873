"""The embedding API: a trained checkpoint with its own preprocessing, in one call.

    from raybind.evaluate.embed import load
    model = load("runs/quickstart/checkpoint_...")          # or s3://bucket/run/checkpoint_...
    texts = model.embed_text(["a red circle moving left"])
    clips = model.embed("video", ["clip.mp4", open("b.mp4", "rb").read()])
    model.similarity(texts, clips)                          # cosine similarities [texts, clips]

Files and bytes decode exactly as the pipeline decodes them (`raybind.data.decode.decode_media`), and
columns go through the same tower inputs (`raybind.data.tower_input.tower_input`, no augmentation), so a file
embeds to the same vector here as in `jobs/evaluate.py` and `jobs/embed.py`. Arrays are taken as decoded
media: video uint8 [T, H, W, 3] RGB, audio a float waveform at the audio tower's sample rate, image and
thermal uint8 [H, W, 3] RGB, depth float metres [H, W].
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import replace
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from encoders import BindModel
from encoders.checkpoint import METADATA_FILE, load_model
from encoders.modalities import modality as modality_spec
from raybind import storage
from raybind.data import media
from raybind.data.batch_format import ANCHOR, DecodeSpec
from raybind.data.decode import RowFailed, as_column, decode_media, depth_map, mel
from raybind.data.tower_input import tower_input
from raybind.errors import InputError
from raybind.evaluate.settings import checkpoint_inference_config, inference_spec
from raybind.train.anchor import anchor_features

MediaInput = str | bytes | np.ndarray
SUMMARY = "summary.json"


class CheckpointError(InputError):
    """The checkpoint URI does not name a RayBind checkpoint (or a run folder that has one)."""


def resolve_checkpoint(uri: str) -> str:
    """A checkpoint folder, or a run folder whose `summary.json` names its final checkpoint."""
    if storage.exists(storage.join(uri, METADATA_FILE)):
        return uri
    summary_uri = storage.join(uri, SUMMARY)
    if storage.exists(summary_uri):
        checkpoint = json.loads(storage.read_text(summary_uri)).get("checkpoint")
        if checkpoint and storage.exists(storage.join(checkpoint, METADATA_FILE)):
            return checkpoint
    raise CheckpointError(f"not a RayBind checkpoint (no {METADATA_FILE}) nor a run folder with one: "
                          f"{storage.redact(uri)}")


def checkpoint_metadata(uri: str) -> dict[str, Any]:
    """The `raybind.json` of a checkpoint or run folder (local or remote), without loading the model."""
    return json.loads(storage.read_text(storage.join(resolve_checkpoint(uri), METADATA_FILE)))


def read_checkpoint(uri: str) -> tuple[BindModel, dict[str, Any]]:
    """(model in eval mode, the checkpoint's `raybind.json`) from a local or remote checkpoint or run folder."""
    uri = resolve_checkpoint(uri)
    with storage.local_dir(uri) as folder:  # a remote checkpoint is copied once, read, then deleted
        model = load_model(folder)
        meta = json.loads(open(os.path.join(folder, METADATA_FILE)).read())
    return model.eval(), meta


def inference_device(prefer_gpu: bool = True) -> torch.device:
    """CUDA when preferred and present, else the CPU."""
    return torch.device("cuda" if prefer_gpu and torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device):
    """bf16 on GPUs (as training), full precision on the CPU (deterministic, and what tests compare)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Embedder:
    """Embeds text and media of the modalities a checkpoint has into its one space (L2-normalised)."""

    def __init__(self, model: BindModel, spec: DecodeSpec | None, device: torch.device | None = None) -> None:
        self.device = device or inference_device()
        self.model = model.to(self.device).eval()
        self.spec = spec
        self.tokenizer = model.tokenizer()

    @property
    def modalities(self) -> list[str]:
        """The modalities the checkpoint has towers for (text not included)."""
        return self.model.modalities

    @property
    def embed_dim(self) -> int:
        """Width D of the shared embedding space."""
        return self.model.embed_dim

    @torch.no_grad()
    def embed_tokens(self, tokens: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Token ids [N, context_length] -> L2-normalised text embeddings [N, D] float32 on the CPU (what the
        inference actors run on a batch's `tokens`)."""
        tokens = torch.as_tensor(tokens).to(self.device).long()
        with _autocast(self.device):
            return self.model.encode_text(tokens).float().cpu()

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """[len(texts), D] text embeddings (the frozen language tower)."""
        if isinstance(texts, str):
            raise TypeError("embed_text takes a list of strings, not one string")
        return self.embed_tokens(self.tokenizer(list(texts)))

    @torch.no_grad()
    def embed_anchor(self, column: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Anchor frames (the batch format's `anchor` column) -> [rows, D] through the frozen image anchor,
        prepared as training prepares them."""
        with _autocast(self.device):
            return anchor_features(self.model, {ANCHOR: torch.as_tensor(column)}, self.device).float().cpu()

    @torch.no_grad()
    def embed_column(self, modality: str, column: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A batch-format column (see `raybind.data.batch_format`) -> [rows, D]; what the inference actors run."""
        tower = self.model.tower_config(modality)
        x = tower_input(modality, torch.as_tensor(column).to(self.device), tower.preprocess, train=False)
        with _autocast(self.device):
            return self.model.encode(modality, x).float().cpu()

    def embed(self, modality: str, inputs: Sequence[MediaInput]) -> torch.Tensor:
        """[len(inputs), D] embeddings of files (paths or URIs), encoded bytes, or decoded arrays."""
        if modality == "text":
            return self.embed_text([str(i) for i in inputs])
        if modality not in self.modalities:
            raise InputError(f"this checkpoint has no {modality!r} tower; it has {self.modalities}")
        if isinstance(inputs, (str, bytes, np.ndarray)):
            inputs = [inputs]
        if self.spec is None:
            raise InputError("this Embedder was built without preprocessing settings: use raybind.evaluate.embed.load")
        spec = replace(self.spec, modalities=(modality,))
        column = np.stack([self._column(modality, item, index, spec) for index, item in enumerate(inputs)])
        return self.embed_column(modality, column)

    @staticmethod
    def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine similarities [len(a), len(b)] of two sets of (normalised) embeddings."""
        return a.float() @ b.float().T

    def _column(self, modality: str, item: MediaInput, index: int, spec: DecodeSpec) -> np.ndarray:
        try:
            if isinstance(item, np.ndarray):
                return decoded_array(modality, item, spec)
            if isinstance(item, (bytes, bytearray)):
                with _bytes_file(bytes(item), modality) as path:
                    return decode_media(modality, path, spec)
            return decode_media(modality, str(item), spec)
        except (RowFailed, media.MediaError, ValueError) as error:
            name = "bytes" if isinstance(item, (bytes, bytearray)) else "array" if isinstance(item, np.ndarray) \
                else storage.redact(str(item))
            raise InputError(f"{modality} input {index} ({name}): {getattr(error, 'reason', error)}") from None


@contextlib.contextmanager
def _bytes_file(data: bytes, modality: str) -> Iterator[str]:
    """Encoded bytes as a temporary file (video decoders need a path; depth needs its format's suffix)."""
    suffix = ".npy" if modality_spec(modality).reads == "depth" and data[:6] == b"\x93NUMPY" else ".bin"
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        yield tmp.name


def decoded_array(modality: str, array: np.ndarray, spec: DecodeSpec) -> np.ndarray:
    """An already decoded media array -> its batch-format column value (sampling and crops as decoding)."""
    size, kind = spec.frame_size, modality_spec(modality)
    if kind.temporal:
        if array.ndim != 4 or array.shape[-1] != 3:
            raise ValueError(f"{modality} array must be uint8 [T, H, W, 3], got {array.shape}")
        picks = media.sample_indices(len(array), spec.num_frames)
        return np.stack([media.square_crop(array[i], size) for i in picks]).astype(np.uint8)
    if kind.tower_input == "spectrogram":
        if array.ndim != 1:
            raise ValueError(f"{modality} array must be a waveform [samples], got {array.shape}")
        return mel(array.astype(np.float32), spec)
    if kind.channels == 1:
        if array.ndim != 2:
            raise ValueError(f"{modality} array must be metres [H, W], got {array.shape}")
        return as_column(modality, depth_map(array.astype(np.float32), spec))
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"{modality} array must be uint8 [H, W, 3], got {array.shape}")
    return as_column(modality, media.square_crop(array, size).astype(np.uint8))


def load(checkpoint: str, device: str | None = None, data_overrides: Sequence[str] = ()) -> Embedder:
    """An `Embedder` for a checkpoint (or run folder), local or `s3://`, with the preprocessing it was
    trained with. `device`: "cpu", "cuda" (default: a GPU when present)."""
    model, meta = read_checkpoint(checkpoint)
    cfg = checkpoint_inference_config(meta, model.modalities, data_overrides, synthesize=False)
    return Embedder(model, inference_spec(cfg, model.config, ""), torch.device(device) if device else None)

