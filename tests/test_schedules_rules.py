import pytest
import torch

from lt_ray.config import ExperimentConfig, OptimConfig
from lt_ray.errors import ConfigError
from lt_ray.resolution import resolve
from lt_ray.rules import build_rule, effective_number_weights
from lt_ray.schedules import last_change_epoch, lr_factor, validate_schedule


def test_step_schedule_matches_ldam_drw_at_200_epochs():
    cfg = OptimConfig()  # warmup 5, x0.01 from epoch 160, x1e-4 from 180 (0-indexed)
    factors = [lr_factor(e, 200, cfg) for e in range(200)]
    assert factors[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factors[5] == factors[159] == 1.0
    assert factors[160] == factors[179] == pytest.approx(0.01)
    assert factors[180] == factors[199] == pytest.approx(1e-4)


def test_step_schedule_scales_with_short_runs():
    factors = [lr_factor(e, 20, OptimConfig()) for e in range(20)]
    assert factors[:2] == pytest.approx([0.5, 1.0])  # warmup capped at epochs // 10
    assert factors[15] == 1.0 and factors[16] == pytest.approx(0.01)
    assert factors[18] == pytest.approx(1e-4)


def test_paco_recipe_steps_after_epochs_320_and_360_of_400():
    """Official paco_cifar.py: lr*0.1 when epoch > 320, lr*0.01 when epoch > 360 (0-indexed),
    after a 10-epoch warm-up; scaled with the epoch count."""
    cfg = resolve(ExperimentConfig.from_dict({"method": {"name": "paco"}})).config.optim
    assert cfg.milestone_lag_epochs == 1
    factors = [lr_factor(e, 400, cfg) for e in range(400)]
    assert factors[10] == factors[320] == 1.0
    assert factors[321] == factors[360] == pytest.approx(0.1)
    assert factors[361] == factors[399] == pytest.approx(0.01)
    assert last_change_epoch(cfg, 400) == 361
    short = [lr_factor(e, 100, cfg) for e in range(100)]
    assert short[80] == 1.0 and short[81] == pytest.approx(0.1) and short[91] == 0.01
    with pytest.raises(ConfigError, match="milestone_lag_epochs"):
        validate_schedule(OptimConfig(milestone_lag_epochs=-1))


def test_cosine_schedule_goes_from_one_to_near_zero():
    cfg = OptimConfig(schedule="cosine", warmup_epochs=0)
    factors = [lr_factor(e, 10, cfg) for e in range(10)]
    assert factors[0] == 1.0
    assert factors[5] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(factors, factors[1:], strict=False))


def test_bad_schedules_are_rejected():
    with pytest.raises(ConfigError, match="optim.schedule"):
        validate_schedule(OptimConfig(schedule="poly"))
    with pytest.raises(ConfigError, match="same length"):
        validate_schedule(OptimConfig(milestones=(0.5,), decay=(0.1, 0.01)))


def test_effective_number_weights_sum_to_num_classes_and_favour_tail():
    counts = torch.tensor([5000, 500, 50])
    w = effective_number_weights(counts, 0.9999)
    assert w.sum().item() == pytest.approx(3.0, rel=1e-6)
    expected = (1 - 0.9999) / (1 - 0.9999 ** counts.double())
    torch.testing.assert_close(w.double(), expected / expected.sum() * 3, rtol=1e-5, atol=1e-6)
    assert w[2] > w[1] > w[0]
    assert torch.allclose(effective_number_weights(counts, 0.0), torch.ones(3))


def test_drw_switches_at_fraction_of_epochs():
    rule = build_rule("drw", torch.tensor([100, 10]))
    assert rule.class_weights(159, 200) is None
    assert rule.class_weights(160, 200) is not None
    short = build_rule("drw", torch.tensor([100, 10]), start_fraction=0.5)
    assert short.class_weights(4, 10) is None and short.class_weights(5, 10) is not None


def test_reweight_resample_none():
    counts = torch.tensor([100, 10])
    assert build_rule("reweight", counts).class_weights(0, 10) is not None
    assert build_rule("resample", counts).sampler(0, 10) == ("effective", {"beta": 0.9999})
    none = build_rule("none", counts)
    assert none.class_weights(0, 10) is None and none.sampler(0, 10) is None


def test_rule_errors_name_the_bad_input():
    with pytest.raises(ConfigError, match="did you mean drw"):
        build_rule("drww", torch.tensor([1, 2]))
    with pytest.raises(ConfigError, match="no hyper-parameter 'gamma'"):
        build_rule("drw", torch.tensor([1, 2]), gamma=1)
    with pytest.raises(ConfigError, match="beta"):
        build_rule("reweight", torch.tensor([1, 2]), beta=1.0)


def test_rule_args_are_typed_and_range_checked():
    from lt_ray.rules import RULES, rule_uses_class_weights

    counts = torch.tensor([100, 10])
    rule = build_rule("drw", counts, beta=0, start_fraction=1)
    assert rule.beta == 0.0 and isinstance(rule.start_fraction, float)
    with pytest.raises(ConfigError, match=r"'method\.rule_args\.beta' must be a number, got True"):
        build_rule("reweight", counts, beta=True)
    with pytest.raises(ConfigError, match=r"method\.rule_args\.start_fraction must be in \[0, 1\]"):
        build_rule("drw", counts, start_fraction=-0.1)
    assert {n for n in RULES.names() if rule_uses_class_weights(n)} == {"reweight", "drw"}


def test_bad_decay_and_warmup_are_rejected():
    with pytest.raises(ConfigError, match="optim.decay"):
        validate_schedule(OptimConfig(decay=(0.1, 0.0)))
    with pytest.raises(ConfigError, match="optim.warmup_epochs"):
        validate_schedule(OptimConfig(warmup_epochs=-1))
