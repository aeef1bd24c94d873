"""The shared training step: cached-feature accumulation equals one big batch; plain stays per micro-batch."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from encoders import BindModel, contrastive_loss, languagebind_config
from encoders.optim import build_optimizer, parameter_groups
from encoders.step import accumulate_gradients, training_step


def _model(modality: str, mask_ratio: float) -> BindModel:
    config = languagebind_config("tiny", [modality])
    tower = dataclasses.replace(config.towers[0], mask_ratio=mask_ratio)
    model = BindModel(dataclasses.replace(config, towers=(tower,))).train()
    return model


def _inputs(modality: str, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    shape = (batch, 4, 3, 64, 64) if modality == "video" else (batch, 3, 64, 64)
    return torch.randn(shape, generator=generator)


def _text(model: BindModel, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    return F.normalize(torch.randn(batch, model.embed_dim, generator=generator), dim=-1)


def _grads(model: BindModel) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and len(a) > 5
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=name)


def test_cached_accumulation_equals_one_batch_four_times_larger():
    model = _model("depth", mask_ratio=0.0)
    inputs, text = _inputs("depth", 8), _text(model, 8)
    tower = model.tower("depth")
    big = float(accumulate_gradients(tower, [inputs], [text]))
    big_grads = _grads(model)
    accumulated = float(accumulate_gradients(tower, inputs.chunk(4), text.chunk(4), mode="cached"))
    _assert_same(_grads(model), big_grads)
    assert accumulated == pytest.approx(big, rel=1e-5)
    # the temperature's gradient is counted once, not once per micro-batch: it equals the big batch's
    scale = next(name for name in big_grads if name.endswith("log_logit_scale"))
    accumulate_gradients(tower, inputs.chunk(4), text.chunk(4), mode="cached")
    once = _grads(model)[scale]
    assert big_grads[scale].abs() > 1e-4 and torch.allclose(once, big_grads[scale], rtol=1e-4)
    assert not torch.allclose(once, 4 * big_grads[scale], rtol=1e-2)


def test_cached_accumulation_replays_the_masking_draws():
    """With token masking the second forward must drop the same tokens as the cached one: the gradients
    equal those of one graph over the same four masked micro-batches."""
    model = _model("video", mask_ratio=0.5)
    inputs, text = _inputs("video", 6), _text(model, 6)
    tower = model.tower("video")
    torch.manual_seed(7)
    accumulate_gradients(tower, inputs.chunk(3), text.chunk(3), mode="cached")
    accumulated = _grads(model)
    torch.manual_seed(7)
    features = torch.cat([F.normalize(tower(x).float(), dim=-1) for x in inputs.chunk(3)])
    contrastive_loss(features, text, tower.logit_scale()).backward()
    _assert_same(accumulated, _grads(model))


def test_plain_accumulation_keeps_each_micro_batch_on_its_own_negatives():
    model = _model("depth", mask_ratio=0.0)
    inputs, text = _inputs("depth", 8), _text(model, 8)
    tower = model.tower("depth")
    plain = float(accumulate_gradients(tower, inputs.chunk(2), text.chunk(2), mode="plain"))
    plain_grads = _grads(model)
    halves = [float(contrastive_loss(F.normalize(tower(x).float(), dim=-1), t, tower.logit_scale()).detach())
              for x, t in zip(inputs.chunk(2), text.chunk(2))]
    assert plain == pytest.approx(sum(halves) / 2, rel=1e-5)
    cached = float(accumulate_gradients(tower, inputs.chunk(2), text.chunk(2), mode="cached"))
    assert cached != pytest.approx(plain, rel=1e-3)  # 7 negatives per sample vs 3
    assert any(not torch.allclose(g, plain_grads[n]) for n, g in _grads(model).items())


def test_unknown_mode_and_mismatched_micro_batches_are_refused():
    model = _model("depth", mask_ratio=0.0)
    inputs, text = _inputs("depth", 4), _text(model, 4)
    with pytest.raises(ValueError, match="unknown accumulation mode 'fancy'"):
        accumulate_gradients(model.tower("depth"), [inputs], [text], mode="fancy")
    with pytest.raises(ValueError, match="as many text as input micro-batches"):
        accumulate_gradients(model.tower("depth"), inputs.chunk(2), [text])


def test_grad_checkpointing_gives_the_same_gradients():
    model = _model("video", mask_ratio=0.3)
    inputs, text = _inputs("video", 4), _text(model, 4)
    tower = model.tower("video")
    torch.manual_seed(3)
    accumulate_gradients(tower, [inputs], [text])
    eager = _grads(model)
    tower.backbone.set_grad_checkpointing(True)
    torch.manual_seed(3)
    accumulate_gradients(tower, [inputs], [text])
    _assert_same(_grads(model), eager)


def test_training_step_updates_the_tower_and_keeps_the_temperature_clamped():
    model = _model("depth", mask_ratio=0.5)
    tower = model.tower("depth")
    optimizer = build_optimizer(parameter_groups(model.towers, {"depth": 1e-2}))
    before = {n: p.detach().clone() for n, p in tower.named_parameters() if p.requires_grad}
    with torch.no_grad():
        tower.log_logit_scale.fill_(10.0)  # above ln(100): the step must clamp it back
    loss = training_step(model, "depth", _inputs("depth", 8), _text(model, 8), optimizer, micro_batches=2)
    assert loss > 0
    assert float(tower.log_logit_scale.detach()) <= 4.6052
    changed = [n for n, p in tower.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any("lora_" in n for n in changed)


def test_compiled_blocks_trace_whole_and_match_eager_with_masking_and_checkpointing():
    """Dynamo traces every block as one graph with symbolic batch size (the eager backend here: the
    inductor run is a gpu-marked test); masking draws stay traceable too."""
    from encoders.masking import random_keep_indices

    model = _model("video", mask_ratio=0.3)
    tower = model.tower("video")
    inputs = _inputs("video", 4)
    torch.manual_seed(5)
    eager = tower(inputs)
    tower.backbone.set_grad_checkpointing(True)
    tower.backbone.compile_blocks(backend="eager", fullgraph=True, dynamic=True)
    torch.manual_seed(5)
    compiled = tower(inputs)
    torch.testing.assert_close(compiled, eager)
    compiled.sum().backward()
    assert tower(_inputs("video", 3)).shape == (3, model.embed_dim)  # another batch size, same graph
    traced = torch.compile(random_keep_indices, backend="eager", fullgraph=True, dynamic=True)
    assert traced(5, 16, 0.5, torch.device("cpu")).shape == (5, 8)


def test_frozen_weights_in_bf16_train_under_bf16_autocast():
    """The GPU layout (frozen weights stored in bf16, trained ones fp32, bf16 autocast), run on the CPU."""
    from encoders.lora import cast_frozen_weights

    model = _model("video", mask_ratio=0.3)
    cast_frozen_weights(model, torch.bfloat16)
    tower = model.tower("video")
    frozen = [p for p in tower.parameters() if not p.requires_grad]
    assert {p.dtype for p in frozen if p.ndim >= 2} == {torch.bfloat16}
    assert {p.dtype for p in frozen if p.ndim < 2} == {torch.float32}  # norms and biases
    assert {p.dtype for p in tower.parameters() if p.requires_grad} == {torch.float32}
    optimizer = build_optimizer(parameter_groups(model.towers, {"video": 1e-2}))
    loss = training_step(model, "video", _inputs("video", 4), _text(model, 4), optimizer, torch.bfloat16,
                         micro_batches=2)
    assert torch.isfinite(loss)
    assert {p.dtype for p in tower.parameters() if p.requires_grad} == {torch.float32}
