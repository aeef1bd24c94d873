"""The video tower is LanguageBind's: the temporal step of every layer, V1.5's tube patches and per-frame class
embeddings, old checkpoints of the shared norm, and the activation of the starting CLIP.

The references here are written from the description of LanguageBind's layer (issue 24), in plain torch, and
read the block's own parameters: they do not call the code they check.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from encoders import BindModel, ModelConfig, TowerConfig, get_preset
from encoders.config import LoraSettings

FRAMES = 4


def _video_model(lora: bool = False, variant: str = "v1", seed: int = 0, frames: int = FRAMES) -> BindModel:
    preset = get_preset("tiny")
    pre = preset.preprocess("video")
    from dataclasses import replace
    tower = TowerConfig(modality="video", lora=LoraSettings(r=4) if lora else None,
                        preprocess=replace(pre, num_frames=frames), video_variant=variant)
    return BindModel(ModelConfig(preset="tiny", init_seed=seed, towers=(tower,))).eval()


def _layer_norm(ln, x):
    return F.layer_norm(x, (x.shape[-1],), ln.weight, ln.bias, ln.eps)


def _linear(layer, x):
    layer = getattr(layer, "base_layer", layer)
    return x @ layer.weight.T + layer.bias


def _attention(attn, x):
    """Plain multi-head self-attention over x [sequences, length, D] from q/k/v/out weights."""
    seqs, length, width = x.shape
    heads = attn.heads
    split = lambda t: t.reshape(seqs, length, heads, width // heads).permute(0, 2, 1, 3)  # noqa: E731
    q, k, v = (split(_linear(p, x)) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
    out = (weights @ v).permute(0, 2, 1, 3).reshape(seqs, length, width)
    return _linear(attn.out_proj, out)


def _reference_layer(block, x, frames):
    """LanguageBind's video layer on x [clips * frames, tokens, D], one token position at a time."""
    clips, tokens = x.shape[0] // frames, x.shape[1]
    x = x.clone()
    for c in range(clips):
        for n in range(tokens):
            seq = x[c * frames:(c + 1) * frames, n, :] + block.temporal_embedding[:frames]   # stays in the stream
            seq = seq + _attention(block.temporal_attn, _layer_norm(block.temporal_ln, seq)[None])[0]
            x[c * frames:(c + 1) * frames, n, :] = seq
    x = x + _attention(block.attn, _layer_norm(block.ln_1, x))
    hidden = F.gelu(_linear(block.mlp.c_fc, _layer_norm(block.ln_2, x)))
    return x + _linear(block.mlp.c_proj, hidden)


def _perturb_temporal(block, seed=1):
    """Make the temporal norm and attention differ from the spatial ones, so sharing would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in (*block.temporal_ln.named_parameters(), *block.temporal_attn.named_parameters()):
            if "lora_" not in name:   # adapters start as a no-op (B = 0) and stay so here
                p.add_(0.3 * torch.randn(p.shape, generator=g))


def test_one_video_layer_equals_languagebinds_reference():
    block = _video_model().tower("video").backbone.blocks[0]
    _perturb_temporal(block)
    x = torch.randn(2 * FRAMES, 5, block.temporal_embedding.shape[1])
    with torch.no_grad():
        torch.testing.assert_close(block(x, FRAMES), _reference_layer(block, x, FRAMES), atol=1e-5, rtol=1e-5)


def test_lora_video_layer_equals_the_reference_too():
    block = _video_model(lora=True).tower("video").backbone.blocks[1]
    _perturb_temporal(block)
    x = torch.randn(FRAMES, 5, block.temporal_embedding.shape[1])
    with torch.no_grad():
        torch.testing.assert_close(block(x, FRAMES), _reference_layer(block, x, FRAMES), atol=1e-5, rtol=1e-5)


def test_temporal_norm_and_attention_start_as_copies_but_are_their_own_parameters():
    block = _video_model().tower("video").backbone.blocks[0]
    assert block.temporal_ln is not block.ln_1 and block.temporal_attn is not block.attn
    for name in ("weight", "bias"):
        assert torch.equal(getattr(block.temporal_ln, name), getattr(block.ln_1, name))
        assert getattr(block.temporal_ln, name).data_ptr() != getattr(block.ln_1, name).data_ptr()
    assert block.temporal_ln.eps == block.ln_1.eps
    spatial = dict(block.attn.named_parameters())
    for name, param in block.temporal_attn.named_parameters():
        assert torch.equal(param, spatial[name]) and param.data_ptr() != spatial[name].data_ptr(), name
    # a step on the temporal ones leaves the spatial ones as they were
    before = {n: p.detach().clone() for n, p in (*block.ln_1.named_parameters(), *block.attn.named_parameters())}
    loss = block(torch.randn(FRAMES, 5, block.temporal_embedding.shape[1]), FRAMES).square().sum()
    temporal = [*block.temporal_ln.parameters(), *block.temporal_attn.parameters()]
    grads = torch.autograd.grad(loss, temporal)
    with torch.no_grad():
        for p, g in zip(temporal, grads):
            p.sub_(0.1 * g)
    after = {n: p for n, p in (*block.ln_1.named_parameters(), *block.attn.named_parameters())}
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert not torch.equal(block.temporal_ln.weight, block.ln_1.weight)


def test_temporal_embedding_is_normal_with_std_inverse_sqrt_width_and_seeded():
    preset = get_preset("tiny")
    width = preset.clip_config["vision_cfg"]["width"]
    model = _video_model(frames=8)
    values = torch.stack([b.temporal_embedding for b in model.tower("video").backbone.blocks])
    assert values.shape[1:] == (8, width)
    assert abs(values.std().item() - width ** -0.5) < 0.1 * width ** -0.5   # 2 x 8 x 128 draws
    assert abs(values.mean().item()) < 0.2 * width ** -0.5
    again = _video_model(frames=8).tower("video").backbone.blocks[1].temporal_embedding
    other = _video_model(frames=8, seed=1).tower("video").backbone.blocks[1].temporal_embedding
    assert torch.equal(again, model.tower("video").backbone.blocks[1].temporal_embedding)
    assert not torch.equal(again, other)


def test_lora_video_trains_adapters_temporal_norm_and_embedding_not_spatial_attention():
    tower = _video_model(lora=True).tower("video")
    trained = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert {"backbone.blocks.0.temporal_ln.weight", "backbone.blocks.0.temporal_ln.bias",
            "backbone.blocks.0.temporal_embedding"} <= trained
    assert not any(".attn." in n or ".ln_1." in n for n in trained)


def test_v15_has_tube_patch_embedding_and_a_class_embedding_per_frame():
    backbone = _video_model(variant="v1.5").tower("video").backbone
    v1 = _video_model().tower("video").backbone
    width, patch = backbone.class_embedding.shape[1], backbone.patch_size[0]
    assert isinstance(backbone.conv1, torch.nn.Conv3d)
    assert tuple(backbone.conv1.weight.shape) == (width, 3, 1, patch, patch)
    assert tuple(backbone.conv1.kernel_size) == (1, patch, patch)
    assert torch.equal(backbone.conv1.weight[:, :, 0], v1.conv1.weight)
    assert tuple(backbone.class_embedding.shape) == (FRAMES, width)
    assert all(torch.equal(row, v1.class_embedding) for row in backbone.class_embedding)


def test_v15_forward_uses_each_frames_own_class_embedding_and_takes_one_frame():
    model = _video_model(variant="v1.5")
    tower, v1 = model.tower("video"), _video_model().tower("video")
    clips = torch.randn(2, FRAMES, 3, 64, 64)
    with torch.no_grad():
        # at init (rows equal, Conv3d = the 2D weights) V1.5 computes what V1 computes
        torch.testing.assert_close(tower(clips), v1(clips), atol=1e-5, rtol=1e-5)
        tower.backbone.class_embedding[2].add_(torch.randn(tower.backbone.class_embedding.shape[1]))  # frame 2 only
        changed = tower(clips)
        assert not torch.allclose(changed, v1(clips), atol=1e-3)
        still = tower(clips[:, :1])                   # an image in a video batch: 1 frame, first row
        torch.testing.assert_close(still, v1(clips[:, :1]), atol=1e-5, rtol=1e-5)
        mixed = tower(clips, frames=torch.tensor([FRAMES, 1]))
        torch.testing.assert_close(mixed[0], changed[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mixed[1], still[1], atol=1e-5, rtol=1e-5)


def test_v15_reference_forward_with_distinct_class_rows():
    tower = _video_model(variant="v1.5").tower("video")
    backbone = tower.backbone
    with torch.no_grad():
        backbone.class_embedding.add_(torch.randn(backbone.class_embedding.shape))
        clip = torch.randn(1, FRAMES, 3, 64, 64)
        # reference: LanguageBind's Conv3d over [b, c, t, h, w], class row t on frame t, positions on all frames
        patches = F.conv3d(clip.permute(0, 2, 1, 3, 4), backbone.conv1.weight, stride=(1, 16, 16))  # [1, D, T, g, g]
        patches = patches.flatten(3).permute(0, 2, 3, 1)[0]                                          # [T, L, D]
        tokens = torch.cat([backbone.class_embedding[:, None], patches], dim=1) + backbone.positional_embedding
        x = backbone.ln_pre(tokens)
        for block in backbone.blocks:
            x = _reference_layer(block, x, FRAMES)
        expected = (backbone.ln_post(x[:, 0]) @ backbone.proj).mean(0)
        torch.testing.assert_close(tower(clip)[0], expected, atol=1e-5, rtol=1e-5)


def test_v15_is_part_of_the_tower_identity_and_old_dicts_are_v1():
    tower = TowerConfig(modality="video", video_variant="v1.5")
    assert TowerConfig.from_dict(tower.to_dict()) == tower
    plain = TowerConfig(modality="video")
    assert "video_variant" not in plain.to_dict()      # checkpoints from before V1.5 keep their config hash
    assert TowerConfig.from_dict(plain.to_dict()).video_variant == "v1"
    with pytest.raises(ValueError, match="video towers"):
        TowerConfig(modality="depth", video_variant="v1.5")


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_checkpoint_from_before_the_temporal_norm_loads_with_ln1_copied(tmp_path, lora):
    from safetensors.torch import load_file, save_file

    from encoders import load_model, save_model

    model = _video_model(lora=lora).train()
    clips = torch.randn(2, FRAMES, 3, 64, 64)
    # an old tower: its class embedding was frozen, and ln_1 normalised the temporal input
    params = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith("class_embedding")]
    grads = torch.autograd.grad(model.encode("video", clips).square().sum() + model.logit_scale("video"), params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(0.05 * g.sign())
        for block in model.tower("video").backbone.blocks:
            block.temporal_ln.load_state_dict(block.ln_1.state_dict())
    model.eval()
    save_model(model, tmp_path / "old")
    path = tmp_path / "old" / "video" / "trained.safetensors"
    tensors = load_file(str(path))
    dropped = [k for k in tensors if ".temporal_ln." in k or k == "backbone.class_embedding"]
    assert len(dropped) > 1                                  # trained in both modes, so they were saved
    save_file({k: v for k, v in tensors.items() if k not in dropped}, str(path))
    if not lora:
        assert "backbone.blocks.0.ln_1.weight" in tensors     # full FT: the checkpoint's own ln_1 is copied
    loaded = load_model(tmp_path / "old").eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode("video", clips), model.encode("video", clips))
    for block in loaded.tower("video").backbone.blocks:
        assert torch.equal(block.temporal_ln.weight, block.ln_1.weight)
        assert block.temporal_ln.weight.data_ptr() != block.ln_1.weight.data_ptr()


def test_activation_follows_the_weights_openai_quickgelu_datacomp_and_laion_gelu():
    # open_clip's pretrained metadata only: nothing is downloaded
    assert get_preset("vit-l-14").quick_gelu("openai") is True
    assert get_preset("vit-l-14").quick_gelu("datacomp_xl_s13b_b90k") is False
    assert get_preset("vit-h-14").quick_gelu("laion2b_s32b_b79k") is False
    assert get_preset("vit-b-32").quick_gelu("openai") is True
    assert get_preset("vit-l-14").quick_gelu(None) is False                  # random init: the config's GELU
    assert get_preset("vit-l-14").quick_gelu("/weights/openai.pt") is False  # a file: the preset says
    assert get_preset("vit-l-14-quickgelu").quick_gelu("/weights/openai.pt") is True
    assert get_preset("vit-h-14").clip_config["vision_cfg"]["width"] == 1280


def test_build_clip_asks_open_clip_for_the_tags_activation(monkeypatch):
    import open_clip
    from open_clip.model import CLIP
    from open_clip.transformer import QuickGELU

    from encoders.backbone import build_clip

    calls = []

    def fake_create_model(name, pretrained=None, force_quick_gelu=False, **_):
        calls.append((name, pretrained, force_quick_gelu))   # stands in for the download
        return CLIP(**{**get_preset("tiny").clip_config, "quick_gelu": force_quick_gelu})

    monkeypatch.setattr(open_clip, "create_model", fake_create_model)
    build_clip(get_preset("vit-l-14"), "openai", None, seed=0)
    build_clip(get_preset("vit-l-14"), "datacomp_xl_s13b_b90k", None, seed=0)
    assert calls == [("ViT-L-14", "openai", True), ("ViT-L-14", "datacomp_xl_s13b_b90k", False)]
    # without a tag the preset's config decides, down to the towers' MLPs
    plain = BindModel(ModelConfig(preset="tiny", towers=(TowerConfig(modality="depth"),)))
    assert isinstance(plain.tower("depth").backbone.blocks[0].mlp.gelu, torch.nn.GELU)
    quick = build_clip(get_preset("vit-b-32-quickgelu"), None, None, seed=0)
    assert isinstance(quick.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)


def test_class_embedding_trains_as_in_languagebind_and_v15_rows_come_apart():
    for lora in (False, True):
        tower = _video_model(lora=lora, variant="v1.5").train().tower("video")
        assert tower.backbone.class_embedding.requires_grad
        assert not tower.backbone.conv1.weight.requires_grad and not tower.backbone.positional_embedding.requires_grad
        loss = tower(torch.randn(2, FRAMES, 3, 64, 64)).square().sum()
        (grad,) = torch.autograd.grad(loss, [tower.backbone.class_embedding])
        assert not torch.allclose(grad[0], grad[1])           # each frame's row learns its own
