"""Losses: a contract over every registered loss, float64 references and identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lt_ray.errors import ConfigError
from lt_ray.losses import LOSSES, build_loss, loss_hparams

COUNTS = torch.tensor([50.0, 30.0, 20.0, 12.0, 8.0, 5.0])  # C = 6, long-tailed
C = COUNTS.numel()
D = 7  # feature width
TOL = {"rel": 1e-5, "abs": 1e-5}
WEIGHTED = ("ce", "focal", "ldam", "bsce", "feabal")  # losses that honour ``weight``


def batch(seed: int, size: int = 10, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(size, C, generator=g) * scale
    targets = torch.randint(0, C, (size,), generator=g)
    features = torch.randn(size, D, generator=g).abs() + 0.1
    weight = torch.rand(C, generator=g) + 0.5
    return logits, targets, features, weight


def call(loss, logits, targets, features=None, weight=None):
    if loss.needs_features:
        return loss(logits, targets, features=features, weight=weight)
    return loss(logits, targets, weight=weight)


# ---------------------------------------------------------------- float64 references, loops


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, np.float64)


def _lse(row) -> float:
    m = max(row)
    return m + math.log(sum(math.exp(v - m) for v in row))


def ref_ce(z, y, w=None) -> float:
    z, y = _np(z), [int(t) for t in y]
    w = np.ones(z.shape[1]) if w is None else _np(w)
    num = sum(w[t] * (_lse(z[i]) - z[i, t]) for i, t in enumerate(y))
    return num / sum(w[t] for t in y)


def ref_focal(z, y, w, gamma) -> float:
    z, y = _np(z), [int(t) for t in y]
    w = np.ones(z.shape[1]) if w is None else _np(w)
    total = 0.0
    for i, t in enumerate(y):
        ce_i = w[t] * (_lse(z[i]) - z[i, t])
        total += (1.0 - math.exp(-ce_i)) ** gamma * ce_i
    return total / len(y)


def ref_bsce(z, y, counts, w=None) -> float:
    return ref_ce(_np(z) + np.log(_np(counts)), y, w)


def ref_margins(counts, max_m) -> np.ndarray:
    m = np.array([n**-0.25 for n in _np(counts)])
    return m * (max_m / m.max())


def ref_ldam(cos, y, counts, w, max_m, s) -> float:
    cos, m = _np(cos).copy(), ref_margins(counts, max_m)
    for i, t in enumerate(y):
        cos[i, int(t)] -= m[int(t)]
    return ref_ce(s * cos, y, w)


def ref_lade(z, y, counts, alpha, lam) -> float:
    z, y, n = _np(z), [int(t) for t in y], _np(counts)
    prior = n / n.sum()
    b, c = z.shape
    prior_ce = ref_ce(z + np.log(prior), y)
    lade = 0.0
    for k in range(c):
        members = [i for i in range(b) if y[i] == k]
        a_k = sum(z[i, k] for i in members) / (len(members) + 1e-8)
        bt_k = _lse([z[i, k] - math.log(prior[k]) + math.log(1.0 / c) for i in range(b)])
        bt_k -= math.log(b)
        lade -= prior[k] * (a_k - bt_k - lam * bt_k**2)
    return prior_ce + alpha * lade


def ref_feabal(z, y, f, counts, w, lam, curr) -> float:
    z, f, n = _np(z).copy(), _np(f), _np(counts)
    log_n = np.log(n)
    span = log_n.max() - log_n.min()
    for i in range(z.shape[0]):
        norm = math.sqrt(sum(v * v for v in f[i]))
        for j in range(z.shape[1]):
            delta = (log_n.max() - log_n[j]) / span if span > 0 else 0.0
            z[i, j] -= curr * lam * delta / norm
    return ref_ce(z, y, w)


def ref_balanced_probs(z, counts) -> np.ndarray:
    z, n = _np(z), _np(counts)
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        denom = sum(n[c] * math.exp(z[i, c]) for c in range(z.shape[1]))
        for j in range(z.shape[1]):
            out[i, j] = min(max(n[j] * math.exp(z[i, j]) / denom, 1e-5), 1.0)
    return out


def ref_gml(z, y, counts, p) -> float:
    prob, y = ref_balanced_probs(z, counts), [int(t) for t in y]
    terms = []
    for j in sorted(set(y)):
        members = [i for i in range(len(y)) if y[i] == j]
        recall = sum(prob[i, j] for i in members) / len(members)
        terms.append((-math.log(recall)) ** p)
    return (sum(terms) / len(terms)) ** (1.0 / p)


def ref_class_avg_bsce(z, y, counts) -> float:
    prob, y = ref_balanced_probs(z, counts), [int(t) for t in y]
    per_class = []
    for j in sorted(set(y)):
        members = [i for i in range(len(y)) if y[i] == j]
        per_class.append(sum(-math.log(prob[i, j]) for i in members) / len(members))
    return sum(per_class) / len(per_class)


# ---------------------------------------------------------------- contract over the registry


def test_registry_holds_every_loss():
    assert {"ce", "focal", "bsce", "ldam", "lade", "feabal", "gml"} <= set(LOSSES.names())


@pytest.fixture(params=LOSSES.names())
def name(request) -> str:
    return request.param


@pytest.mark.parametrize("size", [1, 9])
def test_contract_finite_scalar_with_grads(name, size):
    logits, targets, features, _ = batch(seed=size, size=size)
    logits.requires_grad_(True)
    loss = build_loss(name, COUNTS)
    out = call(loss, logits, targets, features)
    assert out.shape == ()
    assert out.dtype == torch.float32 and out.device == logits.device
    assert torch.isfinite(out)
    out.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_contract_bf16_logits(name):
    logits, targets, features, _ = batch(seed=3)
    ref = call(build_loss(name, COUNTS), logits.bfloat16().float(), targets, features)
    low = logits.bfloat16().requires_grad_(True)
    out = call(build_loss(name, COUNTS), low, targets, features.bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert out.item() == pytest.approx(ref.item(), rel=1e-3, abs=1e-3)
    out.backward()
    assert low.grad is not None and low.grad.dtype == torch.bfloat16
    assert torch.isfinite(low.grad.float()).all()


def test_contract_unknown_hparam_names_it(name):
    with pytest.raises(ConfigError, match="bogus_knob"):
        build_loss(name, COUNTS, bogus_knob=1.0)


def test_contract_defaults_are_keyword_hparams(name):
    loss = build_loss(name, COUNTS, **loss_hparams(name))
    assert loss.num_classes == C
    assert all(buf.device == COUNTS.device for buf in loss.buffers())


@pytest.mark.gpu
def test_contract_on_cuda(name):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    logits, targets, features, weight = (t.cuda() for t in batch(seed=4))
    loss = build_loss(name, COUNTS).cuda()
    out = call(loss, logits, targets, features, weight)
    assert out.device == logits.device and out.dtype == torch.float32 and torch.isfinite(out)
    cpu = call(build_loss(name, COUNTS), *(t.cpu() for t in (logits, targets, features, weight)))
    assert out.item() == pytest.approx(cpu.item(), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize(
    ("loss_name", "hp"),
    [
        ("focal", {"gamma": -1.0}),
        ("ldam", {"max_m": -0.1}),
        ("ldam", {"s": 0.0}),
        ("lade", {"alpha": -1.0}),
        ("lade", {"remine_lambda": -1.0}),
        ("feabal", {"lambda": -1.0}),
        ("gml", {"p": 0.0}),
    ],
)
def test_invalid_hparam_values_raise(loss_name, hp):
    with pytest.raises(ConfigError, match=loss_name):
        build_loss(loss_name, COUNTS, **hp)


def test_nonpositive_counts_raise():
    with pytest.raises(ConfigError):
        build_loss("ce", [3.0, 0.0])


# ---------------------------------------------------------------- against float64 references


@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_ce_matches_reference(seed, use_weight):
    z, y, _, w = batch(seed)
    w = w if use_weight else None
    assert build_loss("ce", COUNTS)(z, y, weight=w).item() == pytest.approx(ref_ce(z, y, w), **TOL)


@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("gamma", [1.0, 2.5])
def test_focal_matches_reference(gamma, use_weight):
    z, y, _, w = batch(seed=5)
    w = w if use_weight else None
    out = build_loss("focal", COUNTS, gamma=gamma)(z, y, weight=w)
    assert out.item() == pytest.approx(ref_focal(z, y, w, gamma), **TOL)


@pytest.mark.parametrize("use_weight", [False, True])
def test_bsce_matches_reference(use_weight):
    z, y, _, w = batch(seed=6)
    w = w if use_weight else None
    out = build_loss("bsce", COUNTS)(z, y, weight=w)
    assert out.item() == pytest.approx(ref_bsce(z, y, COUNTS, w), **TOL)


@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize(("max_m", "s"), [(0.5, 30.0), (0.3, 10.0)])
def test_ldam_matches_reference(max_m, s, use_weight):
    z, y, _, w = batch(seed=7)
    cos = torch.tanh(z)  # cosines lie in [-1, 1]
    w = w if use_weight else None
    out = build_loss("ldam", COUNTS, max_m=max_m, s=s)(cos, y, weight=w)
    assert out.item() == pytest.approx(ref_ldam(cos, y, COUNTS, w, max_m, s), **TOL)


@pytest.mark.parametrize(("alpha", "lam"), [(0.1, 0.1), (0.5, 0.01)])
def test_lade_matches_reference(alpha, lam):
    z, y, _, _ = batch(seed=8, size=12)
    y[:3] = 0  # a head class with several samples; some classes stay absent
    y[3:] = torch.where(y[3:] == 4, 1, y[3:])
    out = build_loss("lade", COUNTS, alpha=alpha, remine_lambda=lam)(z, y)
    assert out.item() == pytest.approx(ref_lade(z, y, COUNTS, alpha, lam), **TOL)


@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize(("lam", "epoch", "epochs"), [(60.0, 100, 200), (5.0, 7, 20)])
def test_feabal_matches_reference(lam, epoch, epochs, use_weight):
    z, y, f, w = batch(seed=9)
    w = w if use_weight else None
    loss = build_loss("feabal", COUNTS, **{"lambda": lam})
    loss.set_epoch(epoch, epochs)
    curr = (epoch / (0.95 * epochs)) ** 2
    out = loss(z, y, features=f, weight=w)
    assert out.item() == pytest.approx(ref_feabal(z, y, f, COUNTS, w, lam, curr), **TOL)


@pytest.mark.parametrize("p", [1.0, 2.0, 0.5])
def test_gml_matches_reference(p):
    z, y, _, _ = batch(seed=10, size=12)
    out = build_loss("gml", COUNTS, p=p)(z, y)
    assert out.item() == pytest.approx(ref_gml(z, y, COUNTS, p), **TOL)


def test_gml_reference_with_clamp_active():
    z, y, _, _ = batch(seed=11, scale=8.0)  # large logits: some p̃ fall below 1e-5
    assert (ref_balanced_probs(z, COUNTS) == 1e-5).any()
    out = build_loss("gml", COUNTS)(z, y)
    assert out.item() == pytest.approx(ref_gml(z, y, COUNTS, 1.0), **TOL)


# ---------------------------------------------------------------- identities


def test_bsce_uniform_counts_is_ce():
    z, y, _, w = batch(seed=12)
    uniform = torch.full((C,), 17.0)
    for weight in (None, w):
        got = build_loss("bsce", uniform)(z, y, weight=weight)
        torch.testing.assert_close(got, build_loss("ce", uniform)(z, y, weight=weight))


def test_ldam_zero_margin_is_scaled_ce():
    z, y, _, w = batch(seed=13)
    cos = torch.tanh(z)
    got = build_loss("ldam", COUNTS, max_m=0.0, s=16.0)(cos, y, weight=w)
    torch.testing.assert_close(got, build_loss("ce", COUNTS)(16.0 * cos, y, weight=w))


def test_ldam_largest_margin_is_max_m_on_rarest_class():
    counts = torch.tensor([40.0, 3.0, 100.0, 9.0])
    margins = build_loss("ldam", counts, max_m=0.4).margins
    assert margins.max().item() == pytest.approx(0.4)
    assert int(margins.argmax()) == int(counts.argmin())
    np.testing.assert_allclose(margins.numpy(), ref_margins(counts, 0.4), rtol=1e-6)


def test_focal_gamma_zero_is_ce():
    z, y, _, _ = batch(seed=14)
    got = build_loss("focal", COUNTS, gamma=0.0)(z, y)
    torch.testing.assert_close(got, build_loss("ce", COUNTS)(z, y))


def test_lade_alpha_zero_is_bsce():
    z, y, _, _ = batch(seed=15)
    got = build_loss("lade", COUNTS, alpha=0.0)(z, y)
    torch.testing.assert_close(got, build_loss("bsce", COUNTS)(z, y))


def test_lade_ignores_weight():
    z, y, _, w = batch(seed=15)
    loss = build_loss("lade", COUNTS)
    torch.testing.assert_close(loss(z, y, weight=w), loss(z, y))


def test_gml_one_sample_per_class_is_bsce():
    z, _, _, _ = batch(seed=16, size=4)
    y = torch.tensor([5, 0, 3, 2])
    got = build_loss("gml", COUNTS)(z, y)
    torch.testing.assert_close(got, build_loss("bsce", COUNTS)(z, y))
    assert got.item() == pytest.approx(ref_class_avg_bsce(z, y, COUNTS), **TOL)


def test_gml_at_most_class_averaged_bsce():
    z, y, _, _ = batch(seed=17, size=24)
    assert (torch.bincount(y, minlength=C) > 1).any()
    gml = build_loss("gml", COUNTS)(z, y).item()
    assert gml < ref_class_avg_bsce(z, y, COUNTS) - 1e-4  # strict: within-class spread


def test_gml_gradient_matches_closed_form():
    z, y, _, _ = batch(seed=18, size=12, scale=0.5)  # small logits: the clamp stays inactive
    prob = ref_balanced_probs(z, COUNTS)
    assert prob.min() > 1e-5
    logits = z.clone().requires_grad_(True)
    build_loss("gml", COUNTS)(logits, y).backward()
    labels = [int(t) for t in y]
    present = sorted(set(labels))
    expected = np.zeros_like(prob)
    for i, j in enumerate(labels):
        within = sum(prob[k, j] for k in range(len(labels)) if labels[k] == j)
        onehot = np.eye(C)[j]
        expected[i] = (prob[i, j] / within) * (prob[i] - onehot) / len(present)
    np.testing.assert_allclose(logits.grad.numpy(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("epoch", "epochs"), [(0, 200), (95, 200), (189, 200), (199, 200)])
def test_feabal_curriculum(epoch, epochs):
    loss = build_loss("feabal", COUNTS)
    assert loss.curr == 0.0  # FBL's epoch 0
    loss.set_epoch(epoch, epochs)
    # at E = 200 this is FBL's (e / (E - 10))^2 exactly
    assert loss.curr == pytest.approx((epoch / (epochs - 10)) ** 2)


def test_feabal_curriculum_scales_with_short_runs_and_can_be_off():
    loss = build_loss("feabal", COUNTS)
    loss.set_epoch(19, 20)  # FBL's (e / (E - 10))^2 would give 3.61 here
    assert loss.curr == pytest.approx((19 / 19) ** 2)
    loss.set_epoch(3, 5)
    assert loss.curr == pytest.approx((3 / 4.75) ** 2)
    fixed = build_loss("feabal", COUNTS, curriculum=False)
    assert fixed.curr == 1.0
    fixed.set_epoch(0, 200)
    assert fixed.curr == 1.0


def test_feabal_zero_curr_or_uniform_counts_is_ce():
    z, y, f, w = batch(seed=19)
    ce = build_loss("ce", COUNTS)(z, y, weight=w)
    torch.testing.assert_close(build_loss("feabal", COUNTS)(z, y, features=f, weight=w), ce)
    uniform = build_loss("feabal", torch.full((C,), 9.0), curriculum=False)
    torch.testing.assert_close(uniform(z, y, features=f, weight=w), ce)


def test_feabal_needs_features():
    z, y, _, _ = batch(seed=20)
    loss = build_loss("feabal", COUNTS)
    assert loss.needs_features
    with pytest.raises(ValueError, match="features"):
        loss(z, y)


# ---------------------------------------------------------------- declared head, weights, types

TRAITS = {  # loss -> (head, uses class weights)
    "ce": ("linear", True),
    "focal": ("linear", True),
    "bsce": ("linear", True),
    "ldam": ("normed", True),
    "feabal": ("linear", True),
    "lade": ("linear", False),
    "gml": ("linear", False),
    "las": ("linear", False),
}


def test_every_loss_declares_its_head_and_class_weight_use(name):
    from lt_ray.losses import loss_traits

    traits = loss_traits(name)
    assert traits.head in ("linear", "normed")
    assert (traits.head, traits.class_weights) == TRAITS[name]
    assert set(WEIGHTED) == {n for n, (_, w) in TRAITS.items() if w}


def test_declared_class_weight_use_matches_forward(name):
    """A loss declaring class_weights=False must give the same value with and without weights."""
    from lt_ray.losses import loss_traits

    logits, targets, features, weight = batch(seed=21, size=12)
    loss = build_loss(name, COUNTS)
    loss.set_epoch(100, 200)  # FeaBal's curriculum active
    with_w = call(loss, logits, targets, features, weight)
    without = call(loss, logits, targets, features)
    assert (not torch.allclose(with_w, without)) == loss_traits(name).class_weights


def test_every_hyperparameter_has_a_declared_type(name):
    import typing

    from lt_ray.losses import LOSSES

    hints = typing.get_type_hints(LOSSES.get(name))
    for key, default in loss_hparams(name).items():
        assert hints[key] in (float, bool, int, str), (name, key)
        assert isinstance(default, hints[key])


def test_hyperparameters_are_coerced_to_declared_types():
    loss = build_loss("focal", COUNTS, gamma=2)
    assert loss.gamma == 2.0 and isinstance(loss.gamma, float)
    for bad in (True, "2", None, [2.0]):
        with pytest.raises(ConfigError, match=r"'method\.loss_args\.gamma' must be a number"):
            build_loss("focal", COUNTS, gamma=bad)
    with pytest.raises(ConfigError, match=r"'method\.loss_args\.curriculum' must be true or"):
        build_loss("feabal", COUNTS, curriculum="yes")
