"""jobs/import_languagebind.py and jobs/export_languagebind.py as users run them (subprocesses, JSON last line),
on LanguageBind folders built from tiny Hugging Face CLIP modules; the imported checkpoint loads through
`raybind.evaluate.embed.load` and embeds as LanguageBind does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tests.encoders.test_languagebind import Reference, _input

pytestmark = pytest.mark.timeout(300)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=280)


def test_import_embed_export_round_trip(tmp_path):
    video, audio = Reference("video", lora_r=8), Reference("audio", seed=3)
    audio.text_model.load_state_dict(video.text_model.state_dict())
    audio.text_projection.load_state_dict(video.text_projection.state_dict())
    inputs = [video.save(tmp_path / "LanguageBind_Video"), audio.save(tmp_path / "LanguageBind_Audio")]
    ckpt = tmp_path / "ckpt"
    result = _run("jobs/import_languagebind.py", "--input", str(inputs[0]), "--input", str(inputs[1]),
                  "--output", str(ckpt))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["towers"]["video"]["lora_r"] == 8 and summary["preset"] == "tiny"

    from raybind.evaluate.embed import load

    embedder = load(str(ckpt), device="cpu")
    assert sorted(embedder.modalities) == ["audio", "video"]
    x = _input("video")
    ours = embedder.model.encode("video", x)
    torch.testing.assert_close(ours, F.normalize(video.embed(x), dim=-1), atol=1e-5, rtol=0)
    assert embedder.embed_text(["a dog barking"]).shape == (1, 128)

    out = tmp_path / "exported"
    result = _run("jobs/export_languagebind.py", "--checkpoint", str(ckpt), "--modality", "video",
                  "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["lora_merged"] and {"config.json", "model.safetensors", "vocab.json"} <= set(summary["files"])

    from encoders.languagebind import import_languagebind

    back = import_languagebind([out])
    torch.testing.assert_close(back.encode("video", x), ours, atol=1e-5, rtol=0)


def test_different_text_towers_exit_2_naming_both(tmp_path):
    a = Reference("image", seed=0).save(tmp_path / "first")
    b = Reference("depth", seed=1).save(tmp_path / "second")
    result = _run("jobs/import_languagebind.py", "--input", str(a), "--input", str(b), "--output", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "first" in result.stderr and "second" in result.stderr and "differ" in result.stderr
