import torch

from encoders import BindModel, contrastive_loss, languagebind_config
from encoders.masking import num_kept, random_keep_indices
from encoders.optim import build_optimizer, parameter_groups

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _effective_weights(backbone, attn: str) -> dict[str, torch.Tensor]:
    """Base weight + LoRA delta of every adapted projection (what the forward pass really uses)."""
    weights = {}
    for i, block in enumerate(backbone.blocks):
        for name in PROJECTIONS:
            layer = getattr(getattr(block, attn), name)
            weights[f"{i}.{name}"] = (layer.base_layer.weight + layer.get_delta_weight("default")).detach().clone()
    return weights


def _train_step(model, modality, batch):
    model.train()
    optimizer = build_optimizer(parameter_groups(model.towers, {modality: 1e-2}))
    tokens = model.tokenizer()([f"caption {i}" for i in range(batch.shape[0])])
    loss = contrastive_loss(model.encode(modality, batch), model.encode_text(tokens), model.logit_scale(modality))
    loss.backward()
    optimizer.step()


def test_lora_adapts_q_k_v_and_out_separately():
    model = BindModel(languagebind_config("tiny", ["depth"]))
    backbone = model.tower("depth").backbone
    before = _effective_weights(backbone, "attn")
    base_before = {k: v for k, v in before.items()}
    frozen_before = {n: p.detach().clone() for n, p in backbone.named_parameters() if "base_layer" in n}
    _train_step(model, "depth", torch.randn(4, 3, 64, 64))
    after = _effective_weights(backbone, "attn")
    for key in before:
        assert not torch.allclose(before[key], after[key]), f"effective weight of {key} did not change"
    for name, param in backbone.named_parameters():
        if "base_layer" in name:
            assert torch.equal(param, frozen_before[name]), f"frozen base weight {name} changed"
    assert base_before.keys() == after.keys()


def test_freezing_policy_matches_languagebind():
    model = BindModel(languagebind_config("tiny", ["audio", "video"]))
    for modality in ("audio", "video"):
        trainable = {n for n, p in model.tower(modality).named_parameters() if p.requires_grad}
        frozen = {n for n, p in model.tower(modality).named_parameters() if not p.requires_grad}
        for name in ("backbone.conv1.weight", "backbone.positional_embedding",
                     "backbone.ln_pre.weight", "backbone.blocks.0.mlp.c_fc.weight"):
            assert name in frozen, name
        # LanguageBind's main.py trains the class embedding after locking the image embeddings
        for name in ("log_logit_scale", "backbone.proj", "backbone.ln_post.weight", "backbone.class_embedding"):
            assert name in trainable, name
        assert all("lora_" in n or n in {"log_logit_scale", "backbone.proj", "backbone.class_embedding"}
                   or "ln_post" in n
                   or n.endswith("temporal_embedding") or ".temporal_ln." in n for n in trainable)
    video = {n for n, p in model.tower("video").named_parameters() if p.requires_grad and "lora_" in n}
    assert video and all(".temporal_attn." in n for n in video), "video LoRA must sit only on temporal attention"
    assert any(n.endswith("temporal_embedding") for n, p in model.tower("video").named_parameters() if p.requires_grad)
    # LanguageBind's main.py trains the temporal LayerNorms beside the adapters
    assert "backbone.blocks.0.temporal_ln.weight" in {n for n, p in model.tower("video").named_parameters()
                                                     if p.requires_grad}


def test_video_lora_updates_temporal_attention_only():
    model = BindModel(languagebind_config("tiny", ["video"]))
    backbone = model.tower("video").backbone
    spatial = {n: p.detach().clone() for n, p in backbone.named_parameters() if ".attn." in n}
    temporal = _effective_weights(backbone, "temporal_attn")
    _train_step(model, "video", torch.randn(3, 8, 3, 64, 64))
    assert all(torch.equal(p, spatial[n]) for n, p in backbone.named_parameters() if ".attn." in n)
    changed = _effective_weights(backbone, "temporal_attn")
    assert all(not torch.allclose(temporal[k], changed[k]) for k in temporal)


def test_full_finetuning_mode_trains_blocks_but_not_embeddings():
    from dataclasses import replace

    config = languagebind_config("tiny", ["depth"])
    config = replace(config, towers=(replace(config.towers[0], lora=None),))
    model = BindModel(config)
    trainable = {n for n, p in model.tower("depth").named_parameters() if p.requires_grad}
    assert "backbone.blocks.0.attn.q_proj.weight" in trainable and "backbone.blocks.1.mlp.c_fc.weight" in trainable
    assert "backbone.conv1.weight" not in trainable and "backbone.positional_embedding" not in trainable
    assert not any("lora_" in n for n in trainable)


def _tokens_entering_blocks(model, modality, batch):
    seen = []
    handle = model.tower(modality).backbone.blocks[0].register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach().clone()))
    model.encode(modality, batch)
    handle.remove()
    return seen[0]


def test_masking_drops_tokens_in_training_only_and_keeps_cls():
    model = BindModel(languagebind_config("tiny", ["depth"]))  # depth ratio 0.5, 16 patches
    batch = torch.randn(2, 3, 64, 64)
    model.eval()
    assert _tokens_entering_blocks(model, "depth", batch).shape[1] == 1 + 16
    model.train()
    masked = _tokens_entering_blocks(model, "depth", batch)
    assert masked.shape[1] == 1 + num_kept(16, 0.5) == 9
    backbone = model.tower("depth").backbone
    cls = backbone.ln_pre((backbone.class_embedding + backbone.positional_embedding[0])[None, None])[0, 0]
    torch.testing.assert_close(masked[:, 0], cls.expand(2, -1).detach())


def test_video_masking_keeps_same_tokens_on_every_frame():
    model = BindModel(languagebind_config("tiny", ["video"])).train()  # ratio 0.3
    frame = torch.randn(1, 1, 3, 64, 64)
    clip = frame.expand(2, 8, 3, 64, 64).clone()  # every frame identical, two clips
    tokens = _tokens_entering_blocks(model, "video", clip)  # [clips * frames, 1 + kept, width]
    assert tokens.shape[1] == 1 + num_kept(16, 0.3)
    per_clip = tokens.view(2, 8, *tokens.shape[1:])
    for c in range(2):
        for t in range(1, 8):
            assert torch.equal(per_clip[c, t], per_clip[c, 0])


def test_keep_indices_are_a_random_subset():
    idx = random_keep_indices(64, 20, 0.5, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert idx.shape == (64, 10)
    assert all(len(set(row.tolist())) == 10 for row in idx)
    assert len({tuple(row.tolist()) for row in idx}) > 1
