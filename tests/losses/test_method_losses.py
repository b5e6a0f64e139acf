"""RIDE, PaCo and MiSLAS (label-aware smoothing) losses against independent float64 references.

The references restate METHODS.md §9 (MiSLAS), §10 (RIDE) and §11 (PaCo), checked against the
official code (RIDE ``model/loss.py`` and ``ea_resnet_cifar.py``, PaCo ``PaCo/LT/losses.py``,
MiSLAS ``methods.py``). They are written as plain per-sample / per-anchor loops in float64 and
share nothing with the implementations' vectorisation; they are built from torch scalar ops only
so that autograd gives reference gradients too.
"""

from __future__ import annotations

import math

import pytest
import torch

from lt_ray.data.longtail import class_counts
from lt_ray.losses import build_loss
from lt_ray.losses.las import smoothing_per_class
from lt_ray.losses.paco import PaCoLoss
from lt_ray.losses.ride import RIDELoss, distill_kl, router_loss, router_targets

TOL = {"rel": 1e-5, "abs": 1e-5}
GRAD_TOL = {"rtol": 1e-5, "atol": 1e-5}
F64 = torch.float64

CIFAR10_IF100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # METHODS.md §1.1


def lt_counts(num_classes: int) -> torch.Tensor:
    """CIFAR-LT exp counts at imbalance 100: 5000..50 for C=10, 500..5 for C=100."""
    return torch.tensor(class_counts(50000 / num_classes, num_classes, "exp", 100), dtype=F64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- float64 building blocks


def log_softmax_row(row: torch.Tensor) -> torch.Tensor:
    """log softmax of one 1-D row, by hand: row - max - log(sum exp(row - max))."""
    top = row.max().detach()
    return row - top - torch.log(torch.exp(row - top).sum())


def kl_row(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_j p_j (log p_j - log q_j) for one row, from log-probabilities."""
    return (torch.exp(p_log) * (p_log - q_log)).sum()


# ---------------------------------------------------------------- RIDE references (§10)


def ref_ldam_margins(counts: torch.Tensor, max_m: float) -> list[float]:
    raw = [float(n) ** -0.25 for n in counts]
    return [v * max_m / max(raw) for v in raw]


def ref_drw_weights(counts: torch.Tensor, beta: float) -> list[float]:
    """Effective-number class-balanced weights (1-β)/(1-β^n), normalised to sum C."""
    raw = [(1.0 - beta) / (1.0 - beta ** float(n)) for n in counts]
    return [v * len(raw) / sum(raw) for v in raw]


def ref_diversity_temperature(counts: torch.Tensor, base: float, factor: float) -> list[float]:
    """T_j = base · (C π_j f + 1 - f) / max_j(C π_j f + 1 - f)."""
    total, c = float(sum(counts)), len(counts)
    raw = [c * float(n) / total * factor + 1.0 - factor for n in counts]
    return [base * v / max(raw) for v in raw]


def ref_ride(
    expert_logits: torch.Tensor,
    targets: torch.Tensor,
    counts: torch.Tensor,
    *,
    switched: bool,
    max_m: float = 0.5,
    s: float = 30.0,
    diversity_factor: float = -0.45,
    diversity_temperature: float = 1.0,
    reweight: bool = True,
    reweight_factor: float = 0.05,
    beta: float = 0.9999,
    detach_ensemble: bool = True,
) -> torch.Tensor:
    """Sum over experts of weighted LDAM CE on z_k plus λ·T̄²·KL(softmax(z̄/T) ‖ softmax(z_k/T)).

    ``switched``: at or after the DRW epoch, where the CE takes the effective-number weights
    and, with ``reweight``, the diversity temperature becomes per class. This is the project's
    reading, in which ``reweight`` gates only the per-class temperature. In the official code,
    ``reweight=False`` sets ``reweight_epoch=-1``, which drops the DRW weights as well.
    ``detach_ensemble=False`` lets gradient flow through z̄. That is not RIDE; it is used only
    to show that it gives the same gradient.
    """
    z = expert_logits.to(F64)
    k_experts, b, c = z.shape
    ys = [int(t) for t in targets]
    margins = ref_ldam_margins(counts, max_m)
    w = ref_drw_weights(counts, beta) if switched else [1.0] * c
    if reweight and switched:
        temps = ref_diversity_temperature(counts, diversity_temperature, reweight_factor)
    else:
        temps = [diversity_temperature] * c
    temp = torch.tensor(temps, dtype=F64)
    t_bar = sum(temps) / c
    ensemble = z.detach() if detach_ensemble else z
    z_bar = ensemble.sum(0) / k_experts  # the ensemble: no gradient flows through it
    total = z.new_zeros(())
    for k in range(k_experts):
        num = z.new_zeros(())
        den = 0.0
        for i, y in enumerate(ys):
            shift = torch.zeros(c, dtype=F64)
            shift[y] = s * margins[y]
            num = num - w[y] * log_softmax_row(z[k, i] - shift)[y]
            den += w[y]
        total = total + num / den
        if diversity_factor != 0.0:
            kl = z.new_zeros(())
            for i in range(b):
                kl = kl + kl_row(log_softmax_row(z_bar[i] / temp), log_softmax_row(z[k, i] / temp))
            total = total + diversity_factor * t_bar * t_bar * kl / b
    return total


def ride_batch(seed: int, k: int, b: int, c: int, s: float = 30.0):
    """Expert logits s·cos with cos in (-1, 1), float64 leaf; targets covering head and tail."""
    g = gen(seed)
    cos = torch.tanh(torch.randn(k, b, c, generator=g, dtype=F64))
    y = torch.randint(0, c, (b,), generator=g)
    y[0], y[-1] = 0, c - 1
    return (s * cos).requires_grad_(True), y


def ref_distill(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    st, te = student.to(F64), teacher.detach().to(F64)
    kl = st.new_zeros(())
    for i in range(st.shape[0]):
        kl = kl + kl_row(log_softmax_row(te[i] / temperature), log_softmax_row(st[i] / temperature))
    return temperature**2 * kl / st.shape[0]


def ref_router_targets(correct: torch.Tensor) -> torch.Tensor:
    b, k = correct.shape
    out = torch.zeros(b, k - 1, dtype=torch.bool)
    for r in range(b):
        for i in range(k - 1):
            later = any(bool(correct[r, j]) for j in range(i + 1, k))
            out[r, i] = (not bool(correct[r, i])) and later
    return out


def ref_router_loss(logits: torch.Tensor, targets: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """mean_i mean_b -[pw·t·log σ(x) + (1-t)·log(1-σ(x))], with log σ(x) = -softplus(-x)."""
    x = logits.to(F64)
    b, routers = x.shape
    total = x.new_zeros(())
    for i in range(routers):
        per = x.new_zeros(())
        for r in range(b):
            v = x[r, i]
            # softplus(v) = log(1 + e^v), written stably by hand
            sp_pos = torch.clamp(v, min=0) + torch.log1p(torch.exp(-v.abs()))
            sp_neg = sp_pos - v  # softplus(-v)
            per = per + (pos_weight * sp_neg if bool(targets[r, i]) else sp_pos)
        total = total + per / b
    return total / routers


# ---------------------------------------------------------------- PaCo reference (§11)


def ref_paco(
    features: torch.Tensor,
    labels: torch.Tensor,
    sup_logits: torch.Tensor,
    counts: torch.Tensor,
    *,
    alpha: float = 0.01,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 0.05,
    supt: float = 1.0,
) -> torch.Tensor:
    """Official PaCoLoss semantics, anchor by anchor (base_temperature = temperature).

    Row i holds C class-centre logits (z_i + log(π + 1e-9))/supt and N contrast logits
    f_i·f_j/τ over every row j (its own included); the row maximum (own column included) is
    subtracted, the denominator is log(Σ g·exp + 1e-12) with g = 1 on centres, γ on contrast
    columns and 0 on the anchor's own column; positives: β on the target centre, α on every
    other contrast column with the same label.
    """
    f, z = features.to(F64), sup_logits.to(F64)
    b, c = z.shape
    n_rows = f.shape[0]
    ys = [int(t) for t in labels]
    total_count = float(sum(counts))
    log_prior = torch.tensor([math.log(float(n) / total_count + 1e-9) for n in counts], dtype=F64)
    losses = []
    for i in range(b):
        centres = (z[i] + log_prior) / supt
        contrast = torch.stack([(f[i] * f[j]).sum() / temperature for j in range(n_rows)])
        row = torch.cat([centres, contrast])
        top = row.max().detach()
        gate = [1.0] * c + [0.0 if j == i else gamma for j in range(n_rows)]
        pos = [beta if cls == ys[i] else 0.0 for cls in range(c)]
        pos += [alpha if (j != i and ys[j] == ys[i]) else 0.0 for j in range(n_rows)]
        denom = sum(g * torch.exp(row[m] - top) for m, g in enumerate(gate) if g != 0.0)
        log_prob = row - top - torch.log(denom + 1e-12)
        weighted = sum(p * log_prob[m] for m, p in enumerate(pos) if p != 0.0)
        losses.append(-weighted / sum(pos))
    return sum(losses) / b


def paco_batch(seed: int, b: int, queue: int, c: int, dim: int, *, unique_anchor: bool = False):
    """q (leaf, unit rows), k close to q (an augmented view), a queue, labels with repeats.

    With ``unique_anchor`` anchor 0 gets a label that no other row except its own key carries.
    """
    g = gen(seed)
    q = torch.nn.functional.normalize(torch.randn(b, dim, generator=g, dtype=F64), dim=1)
    k = torch.nn.functional.normalize(q + 0.3 * torch.randn(b, dim, generator=g, dtype=F64), dim=1)
    bank = torch.nn.functional.normalize(torch.randn(queue, dim, generator=g, dtype=F64), dim=1)
    y = torch.randint(0, 3, (b,), generator=g)  # few labels: repeats in batch and queue
    queue_y = torch.randint(0, 3, (queue,), generator=g)
    y[1], queue_y[0] = y[0], y[0]  # anchor 0 has a same-label query (and key) and queue entry
    if unique_anchor:
        y[0] = c - 1  # never drawn above: only anchor 0 and its key carry it
    sup = 3.0 * torch.randn(b, c, generator=g, dtype=F64)
    q = q.clone().requires_grad_(True)
    sup = sup.requires_grad_(True)
    labels = torch.cat([y, y, queue_y])
    return q, k, bank, labels, sup


# ---------------------------------------------------------------- MiSLAS LAS references (§9)


def ref_smoothing(counts, head: float, tail: float, shape: str) -> list[float]:
    n = [float(v) for v in counts]
    lo, hi = min(n), max(n)
    out = []
    for v in n:
        x = (v - lo) / (hi - lo)
        if shape == "concave":
            out.append(tail + (head - tail) * math.sin(math.pi * x / 2))
        elif shape == "linear":
            out.append(tail + (head - tail) * x)
        elif shape == "convex":
            out.append(head + (head - tail) * math.sin(1.5 * math.pi + math.pi * x / 2))
        else:
            raise ValueError(shape)
    return out


def ref_las(logits: torch.Tensor, targets: torch.Tensor, eps: list[float]) -> torch.Tensor:
    z = logits.to(F64)
    b, c = z.shape
    total = z.new_zeros(())
    for i in range(b):
        y = int(targets[i])
        lp = log_softmax_row(z[i])
        total = total + (1.0 - eps[y]) * (-lp[y]) + eps[y] * (-lp.sum() / c)
    return total / b


# ---------------------------------------------------------------- the references, sanity checks


def test_ref_ride_single_expert_no_margin_no_diversity_is_scaled_ce():
    counts = lt_counts(10)
    g = gen(0)
    cos = torch.rand(1, 12, 10, generator=g, dtype=F64) * 2 - 1
    y = torch.randint(0, 10, (12,), generator=g)
    got = ref_ride(30 * cos, y, counts, switched=False, max_m=0.0, diversity_factor=0.0)
    want = torch.nn.functional.cross_entropy(30 * cos[0], y)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    # one expert is its own ensemble: the diversity KL vanishes whatever its factor
    same = ref_ride(30 * cos, y, counts, switched=True, diversity_factor=-0.45)
    ldam = ref_ride(30 * cos, y, counts, switched=True, diversity_factor=0.0)
    assert same.item() == pytest.approx(ldam.item(), rel=1e-12)


def test_ref_ride_pieces():
    counts = torch.tensor(CIFAR10_IF100, dtype=F64)
    m = ref_ldam_margins(counts, 0.5)
    assert m[-1] == pytest.approx(0.5) and m[0] == pytest.approx(0.5 * (50 / 5000) ** 0.25)
    w = ref_drw_weights(counts, 0.9999)
    assert sum(w) == pytest.approx(10) and w[-1] > w[0]
    t = ref_diversity_temperature(counts, 1.0, 0.05)
    assert t[0] == pytest.approx(1.0)
    head = 10 * 5000 / sum(CIFAR10_IF100) * 0.05 + 0.95
    assert t[-1] == pytest.approx((10 * 50 / sum(CIFAR10_IF100) * 0.05 + 0.95) / head)


def test_ref_distill_is_zero_for_equal_inputs_and_matches_kl_div():
    g = gen(1)
    s, t = torch.randn(6, 10, generator=g, dtype=F64), torch.randn(6, 10, generator=g, dtype=F64)
    assert ref_distill(s, s, 1.5).item() == pytest.approx(0.0, abs=1e-12)
    f = torch.nn.functional
    want = 2.25 * f.kl_div(f.log_softmax(s / 1.5, 1), f.softmax(t / 1.5, 1), reduction="batchmean")
    assert ref_distill(s, t, 1.5).item() == pytest.approx(want.item(), rel=1e-12)


def test_ref_router_loss_matches_bce_with_logits():
    g = gen(2)
    x = torch.randn(9, 3, generator=g, dtype=F64) * 4
    t = torch.rand(9, 3, generator=g) < 0.3
    want = (
        sum(
            torch.nn.functional.binary_cross_entropy_with_logits(
                x[:, i], t[:, i].to(F64), pos_weight=torch.tensor([100.0], dtype=F64)
            )
            for i in range(3)
        )
        / 3
    )
    assert ref_router_loss(x, t, 100.0).item() == pytest.approx(want.item(), rel=1e-12)


@pytest.mark.parametrize("supt", [1.0, 0.5])
def test_ref_paco_without_contrast_is_balanced_ce(supt):
    # α = 0 removes the contrast positives and γ = 0 the contrast denominator: what is left is
    # CE on (z + log π)/supt. τ = 1 keeps the (masked) self column from dominating the row max,
    # so the 1e-12 in the denominator's log is negligible.
    counts = lt_counts(10)
    q, k, bank, labels, sup = paco_batch(3, b=6, queue=12, c=10, dim=8)
    feats = torch.cat([q, k, bank])
    got = ref_paco(feats, labels, sup, counts, alpha=0.0, gamma=0.0, temperature=1.0, supt=supt)
    prior = counts / counts.sum()
    want = torch.nn.functional.cross_entropy((sup + torch.log(prior)) / supt, labels[:6])
    assert got.item() == pytest.approx(want.item(), rel=1e-7)


def test_ref_las_without_smoothing_is_ce_and_full_smoothing_is_uniform_ce():
    g = gen(4)
    z = torch.randn(8, 10, generator=g, dtype=F64) * 2
    y = torch.randint(0, 10, (8,), generator=g)
    ce = torch.nn.functional.cross_entropy(z, y)
    assert ref_las(z, y, [0.0] * 10).item() == pytest.approx(ce.item(), rel=1e-12)
    uniform = -torch.log_softmax(z, 1).mean()
    assert ref_las(z, y, [1.0] * 10).item() == pytest.approx(uniform.item(), rel=1e-12)
    mixed = torch.nn.functional.cross_entropy(z, y, label_smoothing=0.3)
    assert ref_las(z, y, [0.3] * 10).item() == pytest.approx(mixed.item(), rel=1e-12)


def test_ref_smoothing_endpoints():
    for shape in ("concave", "linear", "convex"):
        eps = ref_smoothing(CIFAR10_IF100, 0.4, 0.1, shape)
        assert eps[0] == pytest.approx(0.4, abs=1e-12) and eps[-1] == pytest.approx(0.1, abs=1e-12)
        assert all(a >= b for a, b in zip(eps, eps[1:], strict=False))  # monotone in n


def test_ref_ride_gradient_through_ensemble_cancels_over_experts():
    # Detaching z̄ does not change the gradient of the expert-summed loss: through z̄ it is
    # J_softmax(z̄/T)ᵀ · Σ_k (log p̄ − log q_k) / T, and Σ_k log q_k = K·z̄/T − const (z̄ is the
    # arithmetic mean of the z_k), so the sum is constant per row and J annihilates it. A
    # gradient test therefore cannot see whether an implementation detaches z̄; it can only
    # see the per-expert terms, which the gradient comparisons below check.
    counts = lt_counts(10)
    z, y = ride_batch(5, k=3, b=8, c=10)
    g1 = torch.autograd.grad(ref_ride(z, y, counts, switched=True), z)[0]
    g2 = torch.autograd.grad(ref_ride(z, y, counts, switched=True, detach_ensemble=False), z)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- RIDE: implementation vs reference


RIDE_SHAPES = [(10, 2, 8), (10, 3, 6), (100, 4, 6), (100, 3, 5)]  # (C, K, B)


@pytest.mark.parametrize("diversity_factor", [-0.45, 0.0])
@pytest.mark.parametrize("reweight", [True, False])
@pytest.mark.parametrize(("c", "k", "b"), RIDE_SHAPES)
def test_ride_matches_reference_before_and_after_switch(c, k, b, reweight, diversity_factor):
    counts = lt_counts(c)
    z, y = ride_batch(c + k + b, k, b, c)
    loss = RIDELoss(counts, diversity_factor=diversity_factor, reweight=reweight)
    opts = {"diversity_factor": diversity_factor, "reweight": reweight}
    # 0-indexed: epoch 159 of 200 is the last plain one, 160 the first re-weighted one; back
    # to an early epoch undoes the switch
    refs = {}
    for switched in (False, True):
        want = ref_ride(z, y, counts, switched=switched, **opts)
        refs[switched] = (want.item(), torch.autograd.grad(want, z)[0])
    for epoch, switched in ((0, False), (159, False), (160, True), (199, True), (3, False)):
        loss.set_epoch(epoch, 200)
        got = loss(z, y)
        assert got.shape == ()
        assert got.item() == pytest.approx(refs[switched][0], **TOL), (epoch, switched)
        g_got = torch.autograd.grad(got, z)[0]
        torch.testing.assert_close(g_got.to(F64), refs[switched][1], **GRAD_TOL)


@pytest.mark.parametrize(
    ("epoch", "num_epochs", "fraction", "switched"),
    [(7, 10, 0.8, False), (8, 10, 0.8, True), (14, 30, 0.5, False), (15, 30, 0.5, True)],
)
def test_ride_switch_epoch_follows_num_epochs(epoch, num_epochs, fraction, switched):
    counts = lt_counts(10)
    z, y = ride_batch(11, k=3, b=10, c=10)
    loss = RIDELoss(counts, reweight_fraction=fraction)
    loss.set_epoch(epoch, num_epochs)
    want = ref_ride(z, y, counts, switched=switched)
    assert loss(z, y).item() == pytest.approx(want.item(), **TOL)
    other = ref_ride(z, y, counts, switched=not switched)
    assert abs(other.item() - want.item()) > 1e-3  # the two regimes are distinguishable here


@pytest.mark.parametrize("switched", [False, True])
@pytest.mark.parametrize(
    "hp",
    [
        {"max_m": 0.3, "s": 16.0, "diversity_temperature": 1.5, "reweight_factor": 0.1},
        {"max_m": 0.0, "diversity_factor": -0.2, "diversity_temperature": 2.0, "beta": 0.999},
        {"diversity_factor": 0.3, "diversity_temperature": 0.7, "reweight_factor": 0.02},
    ],
)
def test_ride_matches_reference_other_hparams(hp, switched):
    counts = lt_counts(100)
    z, y = ride_batch(21, k=2, b=10, c=100, s=hp.get("s", 30.0))
    loss = RIDELoss(counts, **hp)
    loss.set_epoch(150 if switched else 10, 160)  # switch at round(0.8 * 160) = 128
    got, want = loss(z, y), ref_ride(z, y, counts, switched=switched, **hp)
    assert got.item() == pytest.approx(want.item(), **TOL)
    g_got, g_want = torch.autograd.grad(got, z)[0], torch.autograd.grad(want, z)[0]
    torch.testing.assert_close(g_got.to(F64), g_want, **GRAD_TOL)


def test_ride_single_expert_no_margin_no_diversity_is_scaled_ce():
    counts = lt_counts(10)
    z, y = ride_batch(31, k=1, b=12, c=10)
    loss = RIDELoss(counts, max_m=0.0, diversity_factor=0.0)
    loss.set_epoch(0, 200)
    want = torch.nn.functional.cross_entropy(z[0].detach(), y)
    assert loss(z, y).item() == pytest.approx(want.item(), **TOL)


@pytest.mark.parametrize("temperature", [1.0, 1.5, 4.0])
@pytest.mark.parametrize("c", [10, 100])
def test_distill_kl_matches_reference(c, temperature):
    g = gen(c + int(10 * temperature))
    student = (10 * torch.randn(9, c, generator=g, dtype=F64)).requires_grad_(True)
    teacher = (10 * torch.randn(9, c, generator=g, dtype=F64)).requires_grad_(True)
    got = distill_kl(student, teacher, temperature)
    want = ref_distill(student, teacher, temperature)
    assert got.item() == pytest.approx(want.item(), **TOL)
    got.backward()
    g_want = torch.autograd.grad(want, student)[0]
    torch.testing.assert_close(student.grad.to(F64), g_want, **GRAD_TOL)
    assert teacher.grad is None or teacher.grad.abs().max() == 0  # the teacher gets no gradient
    assert distill_kl(student, student, temperature).item() == pytest.approx(0.0, abs=1e-6)


T, F_ = True, False
ROUTER_TABLE = {  # correct[:, i] (cumulative experts 0..i right) -> router targets, by hand
    2: [([F_, F_], [F_]), ([F_, T], [T]), ([T, F_], [F_]), ([T, T], [F_])],
    3: [
        ([F_, F_, F_], [F_, F_]),
        ([F_, F_, T], [T, T]),
        ([F_, T, F_], [T, F_]),
        ([F_, T, T], [T, F_]),
        ([T, F_, F_], [F_, F_]),
        ([T, F_, T], [F_, T]),
        ([T, T, F_], [F_, F_]),
        ([T, T, T], [F_, F_]),
    ],
    4: [
        ([F_, F_, F_, T], [T, T, T]),
        ([F_, T, F_, F_], [T, F_, F_]),
        ([T, F_, F_, T], [F_, T, T]),
        ([F_, F_, T, F_], [T, T, F_]),
        ([F_, F_, F_, F_], [F_, F_, F_]),
        ([T, T, T, T], [F_, F_, F_]),
        ([T, F_, T, F_], [F_, T, F_]),
    ],
}


@pytest.mark.parametrize("k", [2, 3, 4])
def test_router_targets_hand_table(k):
    correct = torch.tensor([row for row, _ in ROUTER_TABLE[k]], dtype=torch.bool)
    want = torch.tensor([tgt for _, tgt in ROUTER_TABLE[k]], dtype=torch.bool)
    got = router_targets(correct)
    assert got.dtype == torch.bool and got.shape == (correct.shape[0], k - 1)
    assert torch.equal(got, want)
    assert torch.equal(ref_router_targets(correct), want)  # the loop reference agrees


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_router_targets_random(k):
    correct = torch.rand(64, k, generator=gen(k)) < 0.4
    got = router_targets(correct)
    assert torch.equal(got, ref_router_targets(correct))


@pytest.mark.parametrize("pos_weight", [100.0, 20.0, 1.0])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_router_loss_matches_reference(k, pos_weight):
    g = gen(k + int(pos_weight))
    x = (3 * torch.randn(20, k - 1, generator=g, dtype=F64)).requires_grad_(True)
    t = router_targets(torch.rand(20, k, generator=g) < 0.5)
    got = router_loss(x, t, pos_weight=pos_weight)
    want = ref_router_loss(x, t, pos_weight)
    assert got.item() == pytest.approx(want.item(), **TOL)
    g_got, g_want = torch.autograd.grad(got, x)[0], torch.autograd.grad(want, x)[0]
    torch.testing.assert_close(g_got.to(F64), g_want, **GRAD_TOL)
    if pos_weight == 100.0:
        assert router_loss(x, t).item() == pytest.approx(want.item(), **TOL)  # the default


# ---------------------------------------------------------------- PaCo: implementation vs reference

PACO_HP = [
    {},  # the CIFAR flags: α 0.01, β 1, γ 1, τ 0.05, supt 1
    {"alpha": 0.5, "beta": 0.7, "gamma": 0.3, "temperature": 0.2, "supt": 0.5},
    {"alpha": 1.0, "beta": 1.0, "gamma": 0.0, "temperature": 0.1, "supt": 2.0},
    {"alpha": 0.0, "beta": 1.0, "gamma": 1.0, "temperature": 0.07, "supt": 1.0},
    {"alpha": 0.2, "beta": 0.0, "gamma": 2.0, "temperature": 0.05, "supt": 1.0},
]
PACO_SHAPES = [(4, 8, 10, 8), (8, 16, 100, 16), (6, 12, 10, 32)]  # (B, queue K, C, D)


@pytest.mark.parametrize("unique_anchor", [False, True])
@pytest.mark.parametrize(("b", "queue", "c", "dim"), PACO_SHAPES)
@pytest.mark.parametrize("hp", PACO_HP, ids=lambda hp: "-".join(f"{v:g}" for v in hp.values()))
def test_paco_matches_reference(hp, b, queue, c, dim, unique_anchor):
    counts = lt_counts(c)
    q, k, bank, labels, sup = paco_batch(
        b * queue + c, b, queue, c, dim, unique_anchor=unique_anchor
    )
    if unique_anchor:  # anchor 0's only same-label contrast entry is its own key (row B)
        assert [j for j in range(len(labels)) if j != 0 and labels[j] == labels[0]] == [b]
    else:  # labels repeat inside the batch and in the queue
        assert any(labels[j] == labels[0] for j in range(1, b))
        assert any(labels[j] == labels[0] for j in range(2 * b, 2 * b + queue))
    feats = torch.cat([q, k, bank])
    got = PaCoLoss(counts, **hp)(feats, labels, sup)
    want = ref_paco(feats, labels, sup, counts, **hp)
    assert got.shape == ()
    assert got.item() == pytest.approx(want.item(), **TOL)
    # q appears as the anchors and as contrast columns: both paths carry gradient
    g_got = torch.autograd.grad(got, [q, sup])
    g_want = torch.autograd.grad(want, [q, sup])
    for a, r in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a.to(F64), r, **GRAD_TOL)


def test_paco_without_contrast_is_balanced_ce():
    counts = lt_counts(10)
    q, k, bank, labels, sup = paco_batch(7, b=6, queue=12, c=10, dim=8)
    feats = torch.cat([q, k, bank])
    got = PaCoLoss(counts, alpha=0.0, gamma=0.0, temperature=1.0, supt=0.5)(feats, labels, sup)
    prior = counts / counts.sum()
    want = torch.nn.functional.cross_entropy((sup + torch.log(prior)) / 0.5, labels[:6])
    assert got.item() == pytest.approx(want.item(), **TOL)


# ---------------------------------------------------------------- MiSLAS LAS: implementation vs ref


def test_cifar10_if100_counts():
    assert lt_counts(10).long().tolist() == CIFAR10_IF100


@pytest.mark.parametrize("shape", ["concave", "linear", "convex"])
def test_las_epsilon_matches_formula(shape):
    counts = torch.tensor(CIFAR10_IF100, dtype=torch.float32)
    want = ref_smoothing(CIFAR10_IF100, 0.4, 0.1, shape)
    direct = smoothing_per_class(counts, 0.4, 0.1, shape=shape)
    eps = build_loss("las", counts, smooth_head=0.4, smooth_tail=0.1, shape=shape).epsilon
    for got in (direct, eps):
        assert got.shape == (10,)
        assert got.tolist() == pytest.approx(want, abs=1e-7)
        assert got[0].item() == pytest.approx(0.4, abs=1e-7)  # head endpoint
        assert got[-1].item() == pytest.approx(0.1, abs=1e-7)  # tail endpoint


def test_las_concave_epsilon_cifar10_values():
    # ε_j = 0.1 + 0.3·sin(π(n_j − 50) / (2·4950)), written out for a few classes
    eps = build_loss("las", CIFAR10_IF100).epsilon.tolist()
    for j in (1, 4, 8):
        n = CIFAR10_IF100[j]
        assert eps[j] == pytest.approx(0.1 + 0.3 * math.sin(math.pi * (n - 50) / 9900), abs=1e-7)


@pytest.mark.parametrize("shape", ["concave", "linear", "convex"])
@pytest.mark.parametrize(("head", "tail"), [(0.4, 0.1), (0.3, 0.0), (0.2, 0.0)])
@pytest.mark.parametrize("c", [10, 100])
def test_las_loss_matches_reference(c, head, tail, shape):
    counts = lt_counts(c)
    g = gen(c + int(100 * head))
    z = (3 * torch.randn(16, c, generator=g, dtype=F64)).requires_grad_(True)
    y = torch.randint(0, c, (16,), generator=g)
    y[0], y[1] = 0, c - 1
    loss = build_loss("las", counts, smooth_head=head, smooth_tail=tail, shape=shape)
    got = loss(z, y)
    want = ref_las(z, y, ref_smoothing(counts.tolist(), head, tail, shape))
    assert got.shape == ()
    assert got.item() == pytest.approx(want.item(), **TOL)
    g_got, g_want = torch.autograd.grad(got, z)[0], torch.autograd.grad(want, z)[0]
    torch.testing.assert_close(g_got.to(F64), g_want, **GRAD_TOL)


def test_las_zero_smoothing_is_ce():
    counts = lt_counts(10)
    g = gen(9)
    z = torch.randn(12, 10, generator=g, dtype=F64)
    y = torch.randint(0, 10, (12,), generator=g)
    loss = build_loss("las", counts, smooth_head=0.0, smooth_tail=0.0)
    want = torch.nn.functional.cross_entropy(z, y)
    assert loss(z, y).item() == pytest.approx(want.item(), **TOL)
