import numpy as np
import pytest
import torch

from encoders.synthesis import (
    DepthSynthesizer,
    MunitGenerator,
    MunitParams,
    ThermalSynthesizer,
    random_depth_model,
    random_thermal_generator,
)


def _frames(n: int = 3, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, h, w, 3), dtype=np.uint8)


def test_depth_from_a_saved_glpn_folder(tmp_path):
    model, processor = random_depth_model(seed=3)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    synth = DepthSynthesizer(str(tmp_path))
    depth = synth(_frames())
    assert depth.shape == (3, 48, 64) and depth.dtype == np.float32 and (depth >= 0).all()
    np.testing.assert_allclose(depth, DepthSynthesizer.from_model(model, processor)(_frames()), rtol=1e-4, atol=1e-4)


def test_depth_from_a_tiny_dpt(tmp_path):
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
                       image_size=32, patch_size=8, neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=16,
                       backbone_out_indices=[0, 1, 2, 3], head_hidden_size=8)
    DPTForDepthEstimation(config).save_pretrained(tmp_path)
    DPTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    assert DepthSynthesizer(str(tmp_path))(_frames(2)).shape == (2, 48, 64)


def test_depth_rejects_non_rgb():
    synth = DepthSynthesizer.from_model(*random_depth_model())
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        synth(np.zeros((2, 8, 8), np.uint8))


def test_munit_generator_uses_munit_parameter_names():
    keys = set(MunitGenerator(MunitParams()).state_dict())
    for key in ("enc_style.model.0.conv.weight", "enc_content.model.0.conv.weight",
                "enc_content.model.3.model.0.model.0.conv.weight", "dec.model.0.model.0.model.0.norm.running_mean",
                "dec.model.2.norm.gamma", "dec.model.5.conv.weight", "mlp.model.0.fc.weight", "mlp.model.2.fc.bias"):
        assert key in keys, key


def test_thermal_from_munit_checkpoint_weights_only(tmp_path):
    rgb, thermal = random_thermal_generator(seed=1)
    path = tmp_path / "gen_00100000.pt"
    torch.save({"a": rgb.state_dict(), "b": thermal.state_dict()}, path)
    synth = ThermalSynthesizer.load(path, params=rgb.params)
    out = synth(_frames(2, 30, 42))  # not a multiple of 4: padded and cropped back
    assert out.shape == (2, 30, 42, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, ThermalSynthesizer.from_munit(rgb, thermal)(_frames(2, 30, 42)))
    assert out.std() > 0


def test_thermal_from_torchscript(tmp_path):
    class Gray(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=1, keepdim=True)

    path = tmp_path / "tir.pt"
    torch.jit.script(Gray()).save(str(path))
    out = ThermalSynthesizer.load(path)(_frames(2))
    assert out.shape == (2, 48, 64, 3)
    assert np.array_equal(out[..., 0], out[..., 2])


def test_thermal_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ThermalSynthesizer.load(tmp_path / "missing.pt")
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(1)}, bogus)
    with pytest.raises(ValueError, match="'a' and 'b'"):
        ThermalSynthesizer.load(bogus)


def test_glpn_nyu_config_has_the_size_of_languagebinds_depth_model():
    from transformers import GLPNForDepthEstimation

    from encoders.synthesis import glpn_nyu_config

    params = sum(p.numel() for p in GLPNForDepthEstimation(glpn_nyu_config()).parameters())
    assert 55e6 < params < 70e6  # glpn-nyu (MiT-b4) has ~62M; transformers' default config ~3.7M


@pytest.mark.parametrize("modality", ["depth", "thermal"])
def test_cpu_synthesis_gives_the_same_bytes_whatever_the_batch_and_thread_count(modality):
    """A frame's output is independent of its batch-mates and of torch's thread count: the pipeline's
    layouts batch the same rows differently (decode batches vs synthesis-pool batches). Before the fix, a
    batch of 8 rounded a thermal pixel differently from a batch of 1 on AVX-512 CPUs."""
    synth = (DepthSynthesizer.from_model(*random_depth_model(0)) if modality == "depth"
             else ThermalSynthesizer.from_munit(*random_thermal_generator(0)))
    frames = np.random.default_rng(1).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    threads = torch.get_num_threads()
    try:
        reference = np.concatenate([synth(frames[i:i + 1]) for i in range(len(frames))])
        for count in (1, 2):
            torch.set_num_threads(count)
            for size in (3, 4, 8):
                batched = np.concatenate([synth(frames[i:i + size]) for i in range(0, len(frames), size)])
                np.testing.assert_array_equal(batched, reference)
    finally:
        torch.set_num_threads(threads)
