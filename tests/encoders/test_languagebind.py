"""LanguageBind folders in and out: built here from tiny Hugging Face CLIP modules (no hub), plus the temporal
and V1.5 parts written from LanguageBind's description; a reference forward through those modules must equal
RayBind's embedding of the same input."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from encoders.checkpoint import BASE_TENSORS, load_model, save_model
from encoders.languagebind import LanguageBindError, export_languagebind, import_languagebind
from encoders.languagebind.folder import MODEL_TYPE_OF, read_folder

transformers = pytest.importorskip("transformers")
from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModel  # noqa: E402
from transformers.models.clip.modeling_clip import CLIPAttention  # noqa: E402

WIDTH, LAYERS, HEADS, PATCH, IMAGE, FRAMES, MEL, TARGET = 128, 2, 4, 16, 64, 4, 64, 256   # the 'tiny' preset
TOL = 1e-5


def _vision_config(modality: str, lora_r: int, v15: bool) -> dict:
    config = {"hidden_size": WIDTH, "intermediate_size": 4 * WIDTH, "num_hidden_layers": LAYERS,
              "num_attention_heads": HEADS, "image_size": IMAGE, "patch_size": PATCH, "hidden_act": "gelu",
              "projection_dim": WIDTH, "layer_norm_eps": 1e-5, "add_time_attn": modality == "video",
              "num_frames": FRAMES if modality == "video" else 1, "force_patch_dropout": 0.3 if modality == "video" else 0.5,
              "lora_r": lora_r, "lora_alpha": 16, "lora_dropout": 0.0,
              "num_mel_bins": MEL if modality == "audio" else 0, "target_length": TARGET if modality == "audio" else 0}
    if modality == "video":
        config["clip_type"] = "vl_new" if v15 else "vl"
    return config


TEXT_CONFIG = {"vocab_size": 49408, "hidden_size": WIDTH, "intermediate_size": 4 * WIDTH, "num_hidden_layers": LAYERS,
               "num_attention_heads": HEADS, "max_position_embeddings": 77, "hidden_act": "gelu",
               "projection_dim": WIDTH, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1}


def _inner(model: nn.Module, name: str) -> nn.Module:
    """The transformer inside a Hugging Face CLIP model (transformers 4 wraps it; 5 may not)."""
    return getattr(model, name, model)


class Reference(nn.Module):
    """A LanguageBind model assembled from Hugging Face CLIP modules: its state_dict has LanguageBind's names."""

    def __init__(self, modality: str, lora_r: int = 0, v15: bool = False, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.modality, self.v15, self.lora_r = modality, v15, lora_r
        self.vision_cfg = _vision_config(modality, lora_r, v15)
        hf_vision = CLIPVisionConfig(**{k: v for k, v in self.vision_cfg.items() if k in (
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
            "patch_size", "hidden_act", "projection_dim", "layer_norm_eps")})
        self.vision_model = _inner(CLIPVisionModel(hf_vision), "vision_model")
        self.text_model = _inner(CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG)), "text_model")
        self.visual_projection = nn.Linear(WIDTH, WIDTH, bias=False)
        self.text_projection = nn.Linear(WIDTH, WIDTH, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        emb = self.vision_model.embeddings
        if modality == "audio":   # LanguageBind's audio table is already on the mel x time grid
            emb.position_embedding = nn.Embedding((MEL // PATCH) * (TARGET // PATCH) + 1, WIDTH)
        if v15:                   # tube-1 Conv3d patch embedding and one class embedding per frame
            emb.patch_embedding = nn.Conv3d(3, WIDTH, (1, PATCH, PATCH), (1, PATCH, PATCH), bias=False)
            emb.class_embedding = nn.Parameter(torch.randn(FRAMES, WIDTH))
        for layer in self.vision_model.encoder.layers:
            layer.layer_norm1.weight.data.normal_(1, 0.1)   # non-trivial norms, so a swapped norm shows
            if modality == "video":
                layer.temporal_embedding = nn.Parameter(torch.randn(1, FRAMES, WIDTH) * WIDTH ** -0.5)
                layer.temporal_attn = CLIPAttention(hf_vision)
                layer.temporal_layer_norm1 = nn.LayerNorm(WIDTH)
                layer.temporal_layer_norm1.weight.data.normal_(1, 0.1)
                layer.temporal_layer_norm1.bias.data.normal_(0, 0.1)
        if lora_r:
            from peft import LoraConfig, get_peft_model

            targets = (["temporal_attn.q_proj", "temporal_attn.k_proj", "temporal_attn.v_proj", "temporal_attn.out_proj"]
                       if modality == "video" else ["q_proj", "k_proj", "v_proj", "out_proj"])
            self.vision_model.encoder = get_peft_model(
                self.vision_model.encoder, LoraConfig(r=lora_r, lora_alpha=16, target_modules=targets, lora_dropout=0.0))
            for name, param in self.named_parameters():
                if "lora_B" in name:
                    param.data.normal_(0, 0.05)   # peft starts B at zero; a trained adapter is not
        self.eval()

    def layers(self) -> nn.ModuleList:
        encoder = self.vision_model.encoder
        return encoder.base_model.model.layers if self.lora_r else encoder.layers

    def config(self) -> dict:
        return {"model_type": MODEL_TYPE_OF[self.modality], "projection_dim": WIDTH, "logit_scale_init_value": 2.6592,
                "text_config": TEXT_CONFIG, "vision_config": self.vision_cfg}

    def save(self, folder, pickled: bool = False, old_peft: bool = False):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config()))
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        if old_peft:   # peft as LanguageBind pins it: base weights as plain `q_proj.weight`
            state = {k.replace(".base_layer.", "."): v for k, v in state.items()}
        if pickled:
            torch.save(state, folder / "pytorch_model.bin")
        else:
            save_file(state, str(folder / "model.safetensors"))
        return folder

    @torch.no_grad()
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """LanguageBind's forward: pixels [B, 3, H, W] or video [B, T, 3, H, W] -> projected features [B, P]."""
        emb = self.vision_model.embeddings
        frames = pixels.shape[1] if pixels.ndim == 5 else 1
        flat = pixels.flatten(0, 1) if pixels.ndim == 5 else pixels
        if self.v15:
            clip = pixels.transpose(1, 2)                                      # b c t h w
            patches = emb.patch_embedding(clip).flatten(3).permute(0, 2, 3, 1)  # b t hw c
            cls = emb.class_embedding[None, :, None].expand(pixels.shape[0], -1, 1, -1)
            h = (torch.cat([cls, patches], dim=2) + emb.position_embedding.weight).flatten(0, 1)
        else:
            patches = emb.patch_embedding(flat).flatten(2).transpose(1, 2)
            cls = emb.class_embedding.expand(flat.shape[0], 1, -1)
            h = torch.cat([cls, patches], dim=1) + emb.position_embedding.weight
        h = self.vision_model.pre_layrnorm(h)
        for layer in self.layers():
            if self.modality == "video":
                n = h.shape[1]
                t = h.view(-1, frames, n, WIDTH).transpose(1, 2).reshape(-1, frames, WIDTH)   # (b n) t d
                t = t + layer.temporal_embedding[:, :frames]
                out = layer.temporal_attn(layer.temporal_layer_norm1(t))
                t = t + (out[0] if isinstance(out, tuple) else out)
                h = t.view(-1, n, frames, WIDTH).transpose(1, 2).reshape(-1, n, WIDTH)
            out = layer(h, None)
            h = out[0] if isinstance(out, tuple) else out
        pooled = self.vision_model.post_layernorm(h[:, 0]).view(-1, frames, WIDTH).mean(1)
        return self.visual_projection(pooled)

    @torch.no_grad()
    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_projection(self.text_model(input_ids=ids).pooler_output)


def _input(modality: str, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if modality == "video":
        return torch.randn(batch, FRAMES, 3, IMAGE, IMAGE, generator=g)
    if modality == "audio":
        return torch.randn(batch, 3, MEL, TARGET, generator=g)
    return torch.randn(batch, 3, IMAGE, IMAGE, generator=g)


CASES = [("image", 0, False), ("depth", 2, False), ("thermal", 0, False), ("audio", 0, False), ("audio", 4, False),
         ("video", 0, False), ("video", 8, False), ("video", 0, True)]


@pytest.mark.parametrize("modality,lora_r,v15", CASES, ids=[f"{m}-{'lora' if r else 'ft'}{'-v1.5' if v else ''}"
                                                             for m, r, v in CASES])
def test_import_equals_languagebind_forward(tmp_path, modality, lora_r, v15):
    reference = Reference(modality, lora_r, v15)
    folder = reference.save(tmp_path / "lb", pickled=modality == "image", old_peft=lora_r == 4)
    model = import_languagebind([folder])
    tower = model.tower_config(modality)
    assert (tower.lora is not None) == bool(lora_r)
    x = _input(modality)
    ours = model.tower(modality)(x)
    torch.testing.assert_close(ours, reference.embed(x), atol=TOL, rtol=0)
    ids = model.tokenizer()(["a dog playing a guitar.", "Café, 東京!"])
    torch.testing.assert_close(model.text(ids), reference.embed_text(ids), atol=TOL, rtol=0)


def test_import_maps_the_config(tmp_path):
    model = import_languagebind([Reference("audio").save(tmp_path / "a"), Reference("video", 8).save(tmp_path / "v")])
    audio, video = model.tower_config("audio"), model.tower_config("video")
    assert (audio.preprocess.mel_bins, audio.preprocess.target_length) == (MEL, TARGET)
    assert audio.mask_ratio == 0.5 and video.mask_ratio == 0.3
    assert video.preprocess.num_frames == FRAMES and video.temporal == "attention"
    assert (video.lora.r, video.lora.alpha) == (8, 16)
    assert model.config.preset == "tiny"


def test_saved_checkpoint_reloads_exactly_and_fine_tunes(tmp_path):
    ref_video, ref_audio = Reference("video", 8), Reference("audio")
    ref_audio.text_model.load_state_dict(ref_video.text_model.state_dict())   # one shared text tower
    ref_audio.text_projection.load_state_dict(ref_video.text_projection.state_dict())
    model = import_languagebind([ref_video.save(tmp_path / "v"), ref_audio.save(tmp_path / "a")])
    save_model(model, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / BASE_TENSORS).is_file()
    again = load_model(tmp_path / "ckpt")
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    # a model loaded from it carries its base on: a fine-tuned checkpoint keeps the imported weights
    save_model(again, tmp_path / "ckpt2")
    assert (tmp_path / "ckpt2" / BASE_TENSORS).is_file()


def test_export_then_import_gives_identical_tensors(tmp_path):
    reference = Reference("video", 0, v15=True)
    model = import_languagebind([reference.save(tmp_path / "lb")])
    out = export_languagebind(model, "video", tmp_path / "out")
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "vocab.json", "merges.txt",
                                               "tokenizer_config.json", "special_tokens_map.json"}
    exported = load_file(str(out / "model.safetensors"))
    original = reference.state_dict()
    assert {k: tuple(v.shape) for k, v in exported.items()} == {k: tuple(v.shape) for k, v in original.items()}
    for name, value in exported.items():
        assert torch.equal(value, original[name]), name
    config = json.loads((out / "config.json").read_text())
    assert config["vision_config"]["clip_type"] == "vl_new" and config["model_type"] == "LanguageBindVideo"
    back = import_languagebind([out])
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("modality,lora_r", [("video", 8), ("depth", 2)])
def test_export_lora_merged_or_kept(tmp_path, modality, lora_r):
    reference = Reference(modality, lora_r)
    model = import_languagebind([reference.save(tmp_path / "lb")])
    x = _input(modality)
    expected = reference.embed(x)
    merged = import_languagebind([export_languagebind(model, modality, tmp_path / "merged")])
    assert merged.tower_config(modality).lora is None
    torch.testing.assert_close(merged.tower(modality)(x), expected, atol=TOL, rtol=0)
    kept_dir = export_languagebind(model, modality, tmp_path / "kept", keep_lora=True)
    kept_keys = set(load_file(str(kept_dir / "model.safetensors")))
    # the layout of LanguageBind's LoRA checkpoints (its pinned peft: base weights as plain `q_proj.weight`)
    assert kept_keys == {k.replace(".base_layer.", ".") for k in reference.state_dict()}
    merged_keys = set(load_file(str(tmp_path / "merged" / "model.safetensors")))
    assert merged_keys == {k.replace(".base_layer.", ".").replace("encoder.base_model.model.", "encoder.")
                           for k in reference.state_dict() if "lora_" not in k}
    kept = import_languagebind([kept_dir])
    torch.testing.assert_close(kept.tower(modality)(x), expected, atol=TOL, rtol=0)


def test_different_text_towers_are_an_error_naming_both(tmp_path):
    a = Reference("image", seed=0).save(tmp_path / "img")
    b = Reference("depth", seed=1).save(tmp_path / "dep")
    with pytest.raises(LanguageBindError, match="img.*dep.*differ"):
        import_languagebind([a, b])


def test_missing_key_wrong_shape_unknown_type(tmp_path):
    folder = Reference("thermal").save(tmp_path / "lb")
    state = load_file(str(folder / "model.safetensors"))
    broken = dict(state)
    del broken["vision_model.post_layernorm.weight"]
    save_file(broken, str(folder / "model.safetensors"))
    with pytest.raises(LanguageBindError, match="missing key vision_model.post_layernorm.weight"):
        import_languagebind([folder])
    broken = dict(state)
    broken["visual_projection.weight"] = torch.zeros(WIDTH, WIDTH + 1)
    save_file(broken, str(folder / "model.safetensors"))
    with pytest.raises(LanguageBindError, match=r"visual_projection.weight has shape \[128, 129\]"):
        import_languagebind([folder])
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "LanguageBindSmell"}))
    with pytest.raises(LanguageBindError, match="unknown model_type 'LanguageBindSmell'"):
        read_folder(folder)


class _Payload:
    pass


def test_pickled_non_tensor_is_refused(tmp_path):
    folder = Reference("image").save(tmp_path / "lb", pickled=True)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "evil": _Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(LanguageBindError, match="pytorch_model.bin holds more than tensors"):
        import_languagebind([folder])


def test_unused_tensor_is_an_error(tmp_path):
    folder = Reference("image").save(tmp_path / "lb")
    state = load_file(str(folder / "model.safetensors"))
    save_file({**state, "vision_model.extra.weight": torch.zeros(1)}, str(folder / "model.safetensors"))
    with pytest.raises(LanguageBindError, match="vision_model.extra.weight"):
        import_languagebind([folder])


def test_reference_is_not_trivially_equal(tmp_path):
    """Guard: a swapped temporal norm (RayBind's old shared ln_1) changes the embedding."""
    reference = Reference("video")
    model = import_languagebind([reference.save(tmp_path / "lb")])
    x = _input("video")
    block = model.tower("video").backbone.blocks[0]
    block.temporal_ln = copy.deepcopy(block.ln_1)
    assert (model.tower("video")(x) - reference.embed(x)).abs().max() > 1e-3


def test_activation_and_architecture_choose_the_preset(tmp_path):
    from encoders.languagebind.convert import matching_preset
    from encoders.languagebind.folder import LanguageBindFolder

    def folder(vision: dict, text: dict, dim: int) -> LanguageBindFolder:
        return LanguageBindFolder(str(tmp_path), "video", {"projection_dim": dim, "vision_config": vision,
                                                             "text_config": text}, {})

    large = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
             "patch_size": 14}
    text = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
    assert matching_preset(folder({**large, "hidden_act": "gelu"}, text, 768)) == "vit-l-14"
    assert matching_preset(folder({**large, "hidden_act": "quick_gelu"}, text, 768)) == "vit-l-14-quickgelu"
    huge = {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16, "intermediate_size": 5120,
            "patch_size": 14, "hidden_act": "gelu"}
    big_text = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
    assert matching_preset(folder(huge, big_text, 1024)) == "vit-h-14"
    quick = Reference("image")
    quick.vision_cfg["hidden_act"] = "quick_gelu"
    with pytest.raises(LanguageBindError, match="no RayBind preset.*'quick_gelu': True"):
        import_languagebind([quick.save(tmp_path / "quick")])


def test_fine_tuning_from_an_imported_checkpoint_keeps_its_weights(tmp_path):
    """Load the imported checkpoint, train one step, save, reload: trained tensors moved and reload exactly,
    frozen ones are still LanguageBind's (the fine-tuned checkpoint carries them in base.safetensors)."""
    from encoders.loss import contrastive_loss

    reference = Reference("video", lora_r=8)
    save_model(import_languagebind([reference.save(tmp_path / "lb")]), tmp_path / "imported")
    model = load_model(tmp_path / "imported").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trained, lr=0.1)
    texts = model.encode_text(model.tokenizer()(["a dog", "a cat"]))
    video = model.encode("video", _input("video"))
    contrastive_loss(video, texts, model.logit_scale("video")).backward()
    optimizer.step()
    save_model(model, tmp_path / "tuned")
    tuned = load_model(tmp_path / "tuned")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    for name, value in tuned.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name
        if name not in names:
            assert torch.equal(value, before[name]), name   # frozen: the imported weights
    assert any(not torch.equal(model.state_dict()[n], before[n]) for n in names if "lora_B" in n)


def test_a_missing_folder_names_both_readings(tmp_path, monkeypatch):
    from encoders.languagebind import resolve_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LanguageBindError, match="no such local folder, and the Hugging Face hub"):
        resolve_source("nowhere/LanguageBind_Nothing")
    assert resolve_source(str(tmp_path)) == str(tmp_path)
