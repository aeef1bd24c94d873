import pytest
import torch

from encoders import BindModel, ModelConfig, TextConfig, TowerConfig, get_preset, languagebind_config
from encoders.attention import SplitAttention
from encoders.towers import resize_position_embedding


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match=r"unknown preset 'vit-h'.*tiny.*vit-l-14"):
        get_preset("vit-h")


def test_unknown_modality_lists_choices():
    with pytest.raises(ValueError, match=r"unknown modality 'smell'.*video"):
        TowerConfig.languagebind("smell")


def test_unknown_pretrained_tag_lists_tags():
    with pytest.raises(ValueError, match=r"unknown pretrained 'nope'.*laion2b"):
        BindModel(languagebind_config("vit-b-32", ["depth"], pretrained="nope"))


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "clip.pt"
    with pytest.raises(FileNotFoundError, match="clip.pt"):
        BindModel(languagebind_config("tiny", ["depth"], pretrained=str(missing)))


def test_local_weights_file_is_loaded(tmp_path):
    from open_clip.model import CLIP

    torch.manual_seed(123)
    clip = CLIP(**get_preset("tiny").clip_config)
    path = tmp_path / "tiny_clip.pt"
    torch.save(clip.state_dict(), path)
    model = BindModel(languagebind_config("tiny", ["depth"], pretrained=str(path)))
    backbone = model.tower("depth").backbone
    assert torch.equal(backbone.conv1.weight, clip.visual.conv1.weight)
    torch.testing.assert_close(backbone.blocks[1].attn.v_proj.base_layer.weight,
                               clip.visual.transformer.resblocks[1].attn.in_proj_weight[256:])
    assert torch.equal(model.text.clip.token_embedding.weight, clip.token_embedding.weight)


def test_split_attention_matches_multihead():
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    split = SplitAttention.from_multihead(mha)
    x = torch.randn(3, 7, 32)
    torch.testing.assert_close(split(x), mha(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-5)


def test_encode_shapes_and_normalisation(tiny_config):
    model = BindModel(tiny_config).eval()
    inputs = {"video": torch.randn(2, 8, 3, 64, 64), "audio": torch.randn(2, 3, 64, 256),
              "depth": torch.randn(2, 3, 64, 64), "thermal": torch.randn(2, 3, 64, 64)}
    for modality, batch in inputs.items():
        emb = model.encode(modality, batch)
        assert emb.shape == (2, model.embed_dim)
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    text = model.encode_text(model.tokenizer()(["a dog", "a cat"]))
    assert text.shape == (2, model.embed_dim)
    assert float(model.logit_scale("video").detach()) == pytest.approx(1 / 0.07, rel=1e-5)


@pytest.mark.parametrize("modality,bad,expected", [
    ("video", torch.randn(2, 3, 64, 64), r"\[batch, frames<=8, 3, 64, 64\]"),
    ("depth", torch.randn(2, 1, 64, 64), r"\[batch, 3, 64, 64\]"),
    ("audio", torch.randn(2, 3, 64, 64), r"\[batch, 3, 64, 256\]"),
])
def test_wrong_input_shape_names_expected_shape(tiny_config, modality, bad, expected):
    model = BindModel(tiny_config)
    with pytest.raises(ValueError, match=expected):
        model.encode(modality, bad)


def test_unknown_tower_lists_towers(tiny_config):
    model = BindModel(tiny_config)
    with pytest.raises(KeyError, match=r"no 'image' tower.*video"):
        model.encode("image", torch.randn(1, 3, 64, 64))


def test_language_tower_is_frozen(tiny_config):
    model = BindModel(tiny_config)
    assert not any(p.requires_grad for p in model.text.parameters())
    model.train()
    assert not model.text.training


def test_audio_position_grid_interpolated_for_languagebind_spectrogram():
    """126 x 1036 mel with patch 14 -> 9 x 74 patches; other patch sizes floor to their own grid."""
    from open_clip.model import CLIP

    from encoders.towers import VisionBackbone

    for preset, grid in (("vit-l-14", (9, 74)), ("vit-b-16", (7, 64))):
        config = dict(get_preset(preset).clip_config)
        config["vision_cfg"] = {**config["vision_cfg"], "layers": 1}  # one block is enough for the grid
        visual = CLIP(**config).visual
        backbone = VisionBackbone(visual, (126, 1036))
        assert backbone.grid == grid
        assert backbone.positional_embedding.shape == (1 + grid[0] * grid[1], visual.transformer.width)
        out = backbone(torch.randn(1, 3, 126, 1036))
        assert out.shape == (1, visual.output_dim)


def test_position_embedding_resize_preserves_cls_and_smooth_grid():
    pos = torch.randn(1 + 16, 8)
    assert torch.equal(resize_position_embedding(pos, (4, 4), (4, 4)), pos)
    # a constant-per-channel grid must stay constant after interpolation
    const = torch.cat([pos[:1], torch.ones(16, 8) * 3.0])
    out = resize_position_embedding(const, (4, 4), (2, 9))
    assert out.shape == (1 + 18, 8)
    assert torch.equal(out[0], pos[0])
    torch.testing.assert_close(out[1:], torch.full((18, 8), 3.0))


def test_video_temporal_mean_option_has_no_temporal_attention():
    preset = get_preset("tiny")
    tower = TowerConfig(modality="video", temporal="mean", preprocess=preset.preprocess("video"))
    model = BindModel(ModelConfig(preset="tiny", towers=(tower,)))
    assert all(block.temporal_attn is None for block in model.tower("video").backbone.blocks)
    # with mean pooling, the clip embedding is the average of independent frame embeddings
    model.eval()
    frames = torch.randn(1, 4, 3, 64, 64)
    backbone = model.tower("video").backbone
    per_frame = backbone(frames[0])
    torch.testing.assert_close(backbone(frames[0], num_frames=4)[0], per_frame.mean(0), atol=1e-5, rtol=1e-5)


def test_hf_sentence_encoder_gives_a_real_language_space():
    """The bundled MiniLM is a pretrained encoder: paraphrases are closer than unrelated captions."""
    config = languagebind_config("tiny", ["depth"], text=TextConfig(kind="hf", name="all-minilm-l6-v2"))
    model = BindModel(config)
    assert model.embed_dim == 384
    emb = model.encode_text(model.tokenizer()(["a dog runs on the beach", "a puppy running along the sand",
                                               "quarterly tax report spreadsheet"]))
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.3
    assert model.encode("depth", torch.randn(1, 3, 64, 64)).shape == (1, 384)


def test_hf_text_tower_skips_padding_columns_without_changing_features():
    """Only the columns some caption uses run through the encoder; the features equal the full-context ones
    (every column, attention-masked) and do not depend on which other captions share the batch."""
    from encoders.text import HFTextTower

    model = BindModel(languagebind_config("tiny", ["depth"], text=TextConfig(kind="hf", name="all-minilm-l6-v2")))
    tower: HFTextTower = model.text
    captions = ["a red circle", "a green square moving left with a deep pulsing tone"]
    tokens = model.tokenizer()(captions)
    assert tokens.shape[1] == 77 and int((tokens != tower.pad_token_id).sum(1).max()) < 20
    mask = (tokens != tower.pad_token_id).long()
    with torch.no_grad():
        hidden = tower.encoder(input_ids=tokens, attention_mask=mask).last_hidden_state   # all 77 columns
        full = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        seen = []
        hook = tower.encoder.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs["input_ids"].shape[1]),
                                                       with_kwargs=True)
        batch = tower(tokens)
        hook.remove()
        alone = torch.cat([tower(tokens[i:i + 1]) for i in range(len(captions))])
    torch.testing.assert_close(batch, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, batch, atol=1e-5, rtol=1e-5)
    assert seen == [int(mask.sum(1).max())]   # the longest caption's length, not 77


def test_open_clip_text_tower_runs_only_used_columns_with_the_full_contexts_features():
    """CLIP's causal mask and end-of-text pooling make the trimmed run exact: the features equal open_clip's
    own full-context `encode_text`, whichever captions share the batch."""
    model = BindModel(languagebind_config("tiny", ["depth"]))   # the preset's open_clip text tower
    tower = model.text
    captions = ["a red circle", "a green square moving left with a deep pulsing tone"]
    tokens = model.tokenizer()(captions)
    longest = int((tokens != tower.PAD_TOKEN_ID).sum(1).max())
    assert tower.trims and tokens.shape[1] == 77 and longest < 20
    seen = []
    hook = tower.clip.transformer.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[1]))
    with torch.no_grad():
        batch = tower(tokens)
        alone = torch.cat([tower(tokens[i:i + 1]) for i in range(len(captions))])
    hook.remove()
    with torch.no_grad():
        full = tower.clip.encode_text(tokens)   # all 77 columns
    torch.testing.assert_close(batch, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, batch, atol=1e-5, rtol=1e-5)
    assert seen[0] == longest   # the longest caption's length, not 77


def test_hf_text_projection_is_frozen_and_deterministic():
    text = TextConfig(kind="hf", name="all-minilm-l6-v2", projection_dim=128)
    a = BindModel(languagebind_config("tiny", ["depth"], text=text))
    b = BindModel(languagebind_config("tiny", ["depth"], text=text))
    assert a.embed_dim == 128 and not a.text.projection.requires_grad
    assert torch.equal(a.text.projection, b.text.projection)


@pytest.mark.slow
def test_vit_l14_trainable_fractions_are_lora_sized():
    from encoders.demo import tower_report

    for modality, limit in (("video", 2.0), ("audio", 2.0), ("depth", 0.5), ("thermal", 0.5)):
        model = BindModel(languagebind_config("vit-l-14", [modality]))
        row = tower_report(model)[modality]
        print(f"vit-l-14 {modality}: {row['trainable_percent']:.3f}% trainable")
        assert 0 < row["trainable_percent"] < limit
        del model


def test_hf_language_tower_loads_without_a_progress_bar_and_leaves_bars_as_they_were(capfd):
    from transformers.utils import logging as hf_logging

    from encoders.text import HFTextTower

    assert hf_logging.is_progress_bar_enabled()
    HFTextTower("all-minilm-l6-v2")
    assert "Loading weights" not in capfd.readouterr().err   # transformers draws one per load otherwise
    assert hf_logging.is_progress_bar_enabled()
