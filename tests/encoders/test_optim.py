import pytest
import torch

from encoders import BindModel, languagebind_config
from encoders.constants import ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY
from encoders.optim import build_optimizer, cosine_with_warmup, parameter_groups


def test_groups_have_per_tower_lr_and_no_decay_on_norms_biases_scale_embeddings():
    model = BindModel(languagebind_config("tiny", ["video", "audio"]))
    groups = parameter_groups(model.towers, {"video": 1e-4, "audio": 1e-3})
    optimizer = build_optimizer(groups)
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert by_name["video/decay"]["lr"] == 1e-4 and by_name["audio/decay"]["lr"] == 1e-3
    assert by_name["audio/decay"]["weight_decay"] == WEIGHT_DECAY and by_name["audio/no_decay"]["weight_decay"] == 0
    assert optimizer.defaults["betas"] == ADAM_BETAS and optimizer.defaults["eps"] == ADAM_EPS
    no_decay = {id(p) for g in groups if g["name"].endswith("no_decay") for p in g["params"]}
    for name, param in model.towers.named_parameters():
        if not param.requires_grad:
            continue
        expect_no_decay = param.ndim < 2 or name.endswith(("log_logit_scale", "temporal_embedding"))
        assert (id(param) in no_decay) == expect_no_decay, name
    trainable = sum(p.numel() for p in model.towers.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups for p in g["params"]) == trainable


def test_missing_learning_rate_is_named():
    model = BindModel(languagebind_config("tiny", ["depth"]))
    with pytest.raises(KeyError, match="depth"):
        parameter_groups(model.towers, {"video": 1e-4})


def test_cosine_with_warmup_keeps_group_ratios():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = build_optimizer([{"params": [params[0]], "lr": 1e-3}, {"params": [params[1]], "lr": 1e-4}])
    scheduler = cosine_with_warmup(optimizer, warmup_steps=4, total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert lrs[0][0] == pytest.approx(2.5e-4) and lrs[3][0] == pytest.approx(1e-3)
    assert lrs[19][0] < 1e-5
    assert all(a == pytest.approx(10 * b) for a, b in lrs)
