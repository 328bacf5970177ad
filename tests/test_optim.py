"""Optimizers and learning-rate schedules against torch.optim, checkpoints of their state,
and the promises of ``step``: grads are read only, params without grads are skipped."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
from tinyseg import nn, optim

TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}
SHAPES = [(3, 4), (5,), (2, 1, 3, 3)]


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in SHAPES]


def gradients(step, dtype):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


def run_both(torch, make_ours, make_theirs, dtype, steps=8, groups=None):
    """Run our optimizer and torch's for ``steps`` steps on the same parameters and gradients."""
    ours = make_params(dtype)
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    opt_ours = make_ours(ours if groups is None else groups(ours))
    opt_theirs = make_theirs(theirs if groups is None else groups(theirs))
    worst = 0.0
    for step in range(steps):
        for p, q, g in zip(ours, theirs, gradients(step, dtype)):
            p.grad = g
            q.grad = torch.from_numpy(g.copy())
        opt_ours.step()
        opt_theirs.step()
        for p, q in zip(ours, theirs):
            worst = max(worst, float(np.abs(p.data - q.detach().numpy()).max() / max(1.0, np.abs(p.data).max())))
    assert worst <= TOLERANCE[dtype], f"relative error {worst:.3g}"
    return worst


SGD_CASES = [dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.9, nesterov=True),
             dict(lr=0.1, weight_decay=0.01), dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.05),
             dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("config", SGD_CASES, ids=str)
def test_sgd_matches_torch(torch, config, dtype):
    run_both(torch, lambda p: optim.SGD(p, **config), lambda p: torch.optim.SGD(p, **config), dtype)


ADAM_CASES = [("Adam", dict(lr=1e-2)), ("Adam", dict(lr=1e-2, weight_decay=0.1)),
              ("Adam", dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6)),
              ("AdamW", dict(lr=1e-2)), ("AdamW", dict(lr=1e-2, weight_decay=0.1, betas=(0.5, 0.9)))]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,config", ADAM_CASES, ids=str)
def test_adam_family_matches_torch(torch, name, config, dtype):
    run_both(torch, lambda p: getattr(optim, name)(p, **config), lambda p: getattr(torch.optim, name)(p, **config),
             dtype)


@settings(max_examples=15, deadline=None)
@given(lr=st.floats(1e-4, 1.0), momentum=st.sampled_from([0.0, 0.5, 0.9]), nesterov=st.booleans(),
       weight_decay=st.sampled_from([0.0, 1e-4, 0.1]))
def test_sgd_matches_torch_for_drawn_hyperparameters(lr, momentum, nesterov, weight_decay):
    torch = pytest.importorskip("torch")
    config = dict(lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, weight_decay=weight_decay)
    run_both(torch, lambda p: optim.SGD(p, **config), lambda p: torch.optim.SGD(p, **config), np.float64, steps=4)


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(["Adam", "AdamW"]), lr=st.floats(1e-4, 0.1), beta1=st.floats(0.0, 0.99),
       beta2=st.floats(0.5, 0.9999), eps=st.sampled_from([1e-8, 1e-3]), weight_decay=st.sampled_from([0.0, 0.05]))
def test_adam_matches_torch_for_drawn_hyperparameters(name, lr, beta1, beta2, eps, weight_decay):
    torch = pytest.importorskip("torch")
    config = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    run_both(torch, lambda p: getattr(optim, name)(p, **config), lambda p: getattr(torch.optim, name)(p, **config),
             np.float64, steps=4)


def test_adamw_default_weight_decay_is_pytorchs():
    assert optim.AdamW(make_params(np.float64)).param_groups[0]["weight_decay"] == 1e-2


def test_parameter_groups_with_their_own_lr_match_torch(torch):
    def groups(params):
        return [{"params": params[:1], "lr": 0.5}, {"params": params[1:]}]
    run_both(torch, lambda g: optim.SGD(g, lr=0.1, momentum=0.9), lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9),
             np.float64, groups=groups)
    run_both(torch, lambda g: optim.Adam(g, lr=0.01), lambda g: torch.optim.Adam(g, lr=0.01), np.float64,
             groups=groups)


@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
                                  lambda p: optim.Adam(p, weight_decay=0.1), lambda p: optim.AdamW(p)],
                         ids=["SGD", "Adam", "AdamW"])
def test_step_reads_grads_without_changing_them_and_skips_missing_ones(make):
    params = make_params(np.float64)
    grads = gradients(0, np.float64)
    copies = [g.copy() for g in grads]
    params[0].grad, params[1].grad = grads[0], grads[1]
    untouched = params[2].data.copy()
    opt = make(params)
    opt.step()
    opt.step()
    for g, copy in zip(grads, copies):
        np.testing.assert_array_equal(g, copy)
    assert params[0].grad is grads[0]
    np.testing.assert_array_equal(params[2].data, untouched)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_a_model_trains():
    ts.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
    x = ts.Tensor(np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32))
    target = ts.Tensor((x.data[:, :1] * x.data[:, 1:]).astype(np.float32))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(200):
        diff = model(x) - target
        loss = (diff * diff).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


# ----- checkpoints of the optimizer state

@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
                                  lambda p: optim.Adam(p, lr=1e-2, weight_decay=0.01),
                                  lambda p: optim.AdamW(p, lr=1e-2)], ids=["SGD", "Adam", "AdamW"])
def test_state_dict_round_trips_through_save_and_load(tmp_path, make):
    params = make_params(np.float32)
    opt = make(params)
    for step in range(3):
        for p, g in zip(params, gradients(step, np.float32)):
            p.grad = g
        opt.step()
    path = tmp_path / "optimizer.npz"
    ts.save({"optimizer": opt.state_dict(), "params": [p.data for p in params]}, path)

    loaded = ts.load(path)
    restored_params = [nn.Parameter(a) for a in loaded["params"]]
    restored = make(restored_params)
    restored.load_state_dict(loaded["optimizer"])
    assert restored.param_groups[0].keys() == opt.param_groups[0].keys()
    for step in range(3, 6):
        for p, q, g in zip(params, restored_params, gradients(step, np.float32)):
            p.grad, q.grad = g, g.copy()
        opt.step()
        restored.step()
    for p, q in zip(params, restored_params):
        np.testing.assert_array_equal(p.data, q.data)


def test_state_dict_holds_numpy_copies_and_string_keys():
    params = make_params(np.float64)
    opt = optim.Adam(params)
    for p, g in zip(params, gradients(0, np.float64)):
        p.grad = g
    opt.step()
    state = opt.state_dict()
    assert list(state["state"]) == ["0", "1", "2"]
    assert state["state"]["0"]["step"] == 1
    state["state"]["0"]["exp_avg"][...] = 99.0
    assert not (opt.state[id(params[0])]["exp_avg"] == 99.0).any()
    assert state["param_groups"] == [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                      "params": [0, 1, 2]}]


def test_load_state_dict_errors():
    opt = optim.SGD(make_params(np.float64), lr=0.1, momentum=0.9)
    other = optim.SGD(make_params(np.float64)[:2], lr=0.1)
    with pytest.raises(ValueError, match="group 0 has 2 parameters in the checkpoint, 3 in this optimizer"):
        opt.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="expected a dict with 'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})
    bad = opt.state_dict()
    bad["state"] = {"0": {"momentum_buffer": np.zeros((2, 2))}}
    with pytest.raises(ValueError, match=r"'momentum_buffer' of parameter 0 has shape \(2, 2\), "
                                         r"the parameter \(3, 4\)"):
        opt.load_state_dict(bad)


# ----- bad arguments

@pytest.mark.parametrize("build,error,match", [
    (lambda p: optim.SGD(p, lr=-1), ValueError, "SGD: argument 'lr' expected a value >= 0"),
    (lambda p: optim.SGD(p, lr="fast"), TypeError, "SGD: argument 'lr' expected a finite real number"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), ValueError, "nesterov=True needs momentum > 0"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.0)), ValueError, r"Adam: argument 'betas\[1\]'"),
    (lambda p: optim.Adam(p, betas=0.9), TypeError, "Adam: argument 'betas' expected a pair"),
    (lambda p: optim.AdamW(p, eps=-1), ValueError, "AdamW: argument 'eps'"),
    (lambda p: optim.SGD([], lr=0.1), ValueError, "SGD: got an empty parameter list"),
    (lambda p: optim.SGD(p + p[:1], lr=0.1), ValueError, "a parameter appears more than once"),
    (lambda p: optim.SGD([np.zeros(3)], lr=0.1), TypeError, "expected Parameters"),
    (lambda p: optim.SGD(p[0], lr=0.1), TypeError, "got a single Tensor"),
])
def test_bad_optimizer_arguments(build, error, match):
    with pytest.raises(error, match=match):
        build(make_params(np.float64))


def test_a_gradient_of_the_wrong_shape_is_an_error():
    p = nn.Parameter(np.zeros(3))
    p.grad = np.zeros(4)
    with pytest.raises(ValueError, match=r"SGD.step: gradient of shape \(4,\) for a parameter of shape \(3,\)"):
        optim.SGD([p], lr=0.1).step()


# ----- learning-rate schedules

def schedule_values(scheduler, optimizer, epochs):
    values = []
    for _ in range(epochs):
        values.append([group["lr"] for group in optimizer.param_groups])
        assert values[-1] == scheduler.get_last_lr()
        optimizer.step()            # no gradients: nothing moves, but torch wants this order
        scheduler.step()
    return values


def both_schedules(torch, make_ours, make_theirs, epochs):
    ours_opt = optim.SGD([{"params": [nn.Parameter(np.zeros(1))], "lr": 0.1},
                          {"params": [nn.Parameter(np.zeros(1))], "lr": 0.02}], lr=0.1)
    theirs_opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": 0.1},
                                 {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.02}], lr=0.1)
    ours = schedule_values(make_ours(ours_opt), ours_opt, epochs)
    theirs = schedule_values(make_theirs(theirs_opt), theirs_opt, epochs)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("step_size,gamma", [(3, 0.1), (1, 0.5)])
def test_step_lr_matches_torch(torch, step_size, gamma):
    both_schedules(torch, lambda o: optim.StepLR(o, step_size, gamma),
                   lambda o: torch.optim.lr_scheduler.StepLR(o, step_size, gamma), epochs=12)


@pytest.mark.parametrize("T_max,eta_min", [(10, 0.0), (7, 1e-3)])
def test_cosine_annealing_matches_torch(torch, T_max, eta_min):
    both_schedules(torch, lambda o: optim.CosineAnnealingLR(o, T_max, eta_min),
                   lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max, eta_min), epochs=2 * T_max + 3)


def test_cosine_with_warmup_matches_torchs_sequential_schedule(torch):
    warmup, T_max, eta_min = 3, 12, 1e-4

    def theirs(o):
        S = torch.optim.lr_scheduler
        return S.SequentialLR(o, [S.LinearLR(o, start_factor=1 / (warmup + 1), total_iters=warmup),
                                  S.CosineAnnealingLR(o, T_max - warmup, eta_min)], milestones=[warmup])

    both_schedules(torch, lambda o: optim.CosineAnnealingLR(o, T_max, eta_min, warmup_epochs=warmup), theirs,
                   epochs=T_max + 1)


def test_warmup_ramps_up_then_anneals_to_eta_min():
    opt = optim.Adam([nn.Parameter(np.zeros(1))], lr=1.0)
    values = [lr for (lr,) in schedule_values(optim.CosineAnnealingLR(opt, 10, 0.0, warmup_epochs=4), opt, 11)]
    assert values[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert values[10] == pytest.approx(0.0, abs=1e-15)
    assert all(a >= b for a, b in zip(values[4:], values[5:]))


def test_scheduler_state_round_trips(tmp_path):
    def build():
        opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=0.1)
        return opt, optim.CosineAnnealingLR(opt, 20, 1e-3, warmup_epochs=2)

    opt, scheduler = build()
    for _ in range(5):
        scheduler.step()
    ts.save({"scheduler": scheduler.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "s.npz")
    loaded = ts.load(tmp_path / "s.npz")
    opt2, scheduler2 = build()
    opt2.load_state_dict(loaded["optimizer"])
    scheduler2.load_state_dict(loaded["scheduler"])
    assert scheduler2.last_epoch == 5 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    scheduler.step()
    scheduler2.step()
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()


def test_bad_scheduler_arguments():
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="StepLR: argument 'step_size' expected a value >= 1"):
        optim.StepLR(opt, 0)
    with pytest.raises(ValueError, match=r"warmup_epochs \(5\) must be smaller than T_max \(5\)"):
        optim.CosineAnnealingLR(opt, 5, warmup_epochs=5)
    with pytest.raises(TypeError, match="expected a tinyseg Optimizer"):
        optim.StepLR("adam", 3)
    assert math.isclose(opt.param_groups[0]["lr"], 0.1)          # failed constructions leave it alone


@pytest.mark.parametrize("T_max,power", [(10, 0.9), (7, 2.0)])
def test_poly_matches_torch(torch, T_max, power):
    both_schedules(torch, lambda o: optim.PolyLR(o, T_max, power),
                   lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=T_max, power=power),
                   epochs=T_max + 3)


def test_poly_with_warmup_matches_torchs_sequential_schedule(torch):
    warmup, T_max, power = 3, 12, 0.9

    def theirs(o):
        S = torch.optim.lr_scheduler
        return S.SequentialLR(o, [S.LinearLR(o, start_factor=1 / (warmup + 1), total_iters=warmup),
                                  S.PolynomialLR(o, total_iters=T_max - warmup, power=power)], milestones=[warmup])

    both_schedules(torch, lambda o: optim.PolyLR(o, T_max, power, warmup_epochs=warmup), theirs, epochs=T_max + 1)


def test_poly_ramps_up_then_decays_to_zero():
    opt = optim.Adam([nn.Parameter(np.zeros(1))], lr=1.0)
    values = [lr for (lr,) in schedule_values(optim.PolyLR(opt, 10, 0.9, warmup_epochs=2), opt, 12)]
    assert values[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert values[5] == pytest.approx((1 - 3 / 8) ** 0.9)
    assert values[9] > 0 and values[10] == values[11] == 0.0
    assert all(a >= b for a, b in zip(values[2:], values[3:]))
    with pytest.raises(ValueError, match=r"PolyLR: warmup_epochs \(4\) must be smaller than T_max \(4\)"):
        optim.PolyLR(opt, 4, warmup_epochs=4)
