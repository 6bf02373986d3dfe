"""Distillation against exact teachers: the progressive-distillation loss, one halving, the distilled sampler's
grid, and the guided-distillation target (float64)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf


MU, VAR = 0.5, 0.09  # the 1-D Gaussian data N(MU, VAR)


def _sde():
    return sf.VPSDE(sf.CosineSchedule())


def _teacher(sde):
    return sf.AnalyticScore(sf.GaussianMixture(jnp.ones(1), jnp.full((1, 1), MU), jnp.full((1, 1, 1), VAR)), sde)


def _uniform_index(sde, t, n):
    """Index i of the student's step starting at t on the uniform grid of n steps over [t0, T]."""
    return jnp.clip(jnp.round((sde.T - t) / (sde.T - sde.t0) * n).astype(jnp.int32), 0, n - 1)


class ExactTwoStep(sf.AbstractScoreModel):
    r"""The exact 2-step map of DDIM on N(MU, VAR), written in closed form (not through the teacher or `ddim_step`):
    $E[x_0 | z_t] = \mu + \alpha v/(\alpha^2 v + \sigma^2)\,(z_t - \alpha\mu)$, a DDIM step is
    $z_s = (\sigma_s/\sigma_t) z + (\alpha_s - \sigma_s\alpha_t/\sigma_t)\,\hat x_0(z)$, and the student's
    denoiser is the $\tilde x$ whose one step lands where two of them do. `offset` perturbs it."""

    sde: sf.AbstractSDE
    steps: int = eqx.field(static=True)
    offset: float = 0.0

    def _x_tilde(self, t, z):
        h = (self.sde.T - self.sde.t0) / (2 * self.steps)
        i = _uniform_index(self.sde, t, self.steps)
        t = self.sde.T - 2 * i * h  # snap to the grid (t is a grid time already)
        path = [t, t - h, t - 2 * h]

        def step(a, b, z):
            (al_a, sg_a), (al_b, sg_b) = self.sde.alpha_sigma(a), self.sde.alpha_sigma(b)
            x0 = MU + al_a * VAR / (al_a**2 * VAR + sg_a**2) * (z - al_a * MU)
            return sg_b / sg_a * z + (al_b - sg_b * al_a / sg_a) * x0

        z_s = step(path[1], path[2], step(path[0], path[1], z))
        (al_t, sg_t), (al_s, sg_s) = self.sde.alpha_sigma(path[0]), self.sde.alpha_sigma(path[2])
        return (z_s - sg_s / sg_t * z) / (al_s - sg_s / sg_t * al_t) + self.offset

    def __call__(self, t, x, cond=None, *, key=None):
        alpha, sigma = self.sde.alpha_sigma(t)
        return sf.score_from_x0(x, self._x_tilde(t, x), alpha, sigma)


def _x_weights(sde, n, weighting):
    ts = jnp.asarray(sf.DistillationGrid.of(sde, n).times[:-1])
    return jax.vmap(lambda t: weighting.weight(sde, t) * jnp.exp(sde.log_snr(t)))(ts)


@pytest.mark.parametrize("num_steps", [1, 4])
@pytest.mark.parametrize("weighting", [sf.TruncatedSNRWeighting(), sf.VWeighting()])
def test_loss_zero_at_exact_two_step_map(getkey, num_steps, weighting):
    sde = _sde()
    teacher = _teacher(sde)
    x0 = MU + jnp.sqrt(VAR) * jax.random.normal(getkey(), (512, 1))
    key = getkey()

    def loss(student):
        return sf.progressive_distillation_loss(student, teacher, x0, key=key, num_steps=num_steps, weighting=weighting)

    exact = loss(ExactTwoStep(sde, num_steps))
    one_step = loss(teacher)  # one DDIM step of the teacher is not two
    delta = 1e-3
    shifted = loss(ExactTwoStep(sde, num_steps, offset=delta))
    w = _x_weights(sde, num_steps, weighting)
    assert one_step > 1e-6
    assert exact < 1e-16 * one_step
    # an offset delta in x costs w_x(t) delta^2 at each sampled grid time
    assert float(jnp.min(w)) * delta**2 * (1 - 1e-6) <= shifted <= float(jnp.max(w)) * delta**2 * (1 + 1e-6)
    assert float(jnp.max(w) / jnp.min(w)) >= 1.0


def test_truncated_snr_weight():
    sde = _sde()
    t = jnp.linspace(sde.t0, sde.T, 7)
    snr = jnp.exp(jax.vmap(sde.log_snr)(t))
    w_x = jax.vmap(lambda t: sf.TruncatedSNRWeighting().weight(sde, t))(t) * snr
    np.testing.assert_allclose(w_x, jnp.maximum(snr, 1.0), rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(lambda t: sf.VWeighting().weight(sde, t))(t) * snr, snr + 1.0, rtol=1e-12)


class TabularLinear(sf.AbstractScoreModel):
    """A student whose denoiser is a[i] z + b[i] at the grid time t_i of its `steps`-step grid."""

    sde: sf.AbstractSDE
    a: jax.Array
    b: jax.Array
    steps: int = eqx.field(static=True)

    def __call__(self, t, x, cond=None, *, key=None):
        i = _uniform_index(self.sde, t, self.steps)
        alpha, sigma = self.sde.alpha_sigma(t)
        return sf.score_from_x0(x, self.a[i] * x + self.b[i], alpha, sigma)


def test_one_halving_reproduces_teacher(getkey, tmp_path):
    sde = _sde()
    teacher = _teacher(sde)
    n = 2
    # initialised from the teacher: its (one-step) denoiser, exactly linear for Gaussian data
    ts = jnp.asarray(sf.DistillationGrid.of(sde, n).times[:-1])
    alpha, sigma = jax.vmap(sde.alpha_sigma)(ts)
    c = alpha * VAR / (alpha**2 * VAR + sigma**2)
    student = TabularLinear(sde, c, MU * (1 - alpha * c), n)
    data = lambda k, m: MU + np.sqrt(VAR) * jax.random.normal(k, (m, 1))  # a sampler: 2048 draws, once
    kw = dict(key=getkey(), train_steps=400, batch_size=128, student=student, learning_rate=0.02)
    kw |= dict(num_examples=2048, checkpoint_dir=tmp_path)
    (stage,) = sf.distill(teacher, data, 2 * n, n, **kw)
    assert stage.steps == n and stage.student.grid == sf.DistillationGrid.of(sde, n) and stage.train_steps == 400

    key, shape = getkey(), (256, 1)
    out = sf.sample(stage.student, sde, key, shape, sf.DistilledDDIM(stage.student)).samples
    ref = sf.sample(teacher, sde, key, shape, sf.DDIM(steps=2 * n)).samples
    base = sf.sample(teacher, sde, key, shape, sf.DDIM(steps=n)).samples
    err = float(jnp.max(jnp.abs(out - ref)))
    assert err < 1e-3
    assert float(jnp.max(jnp.abs(base - ref))) > 10 * err  # the halving did something

    # resume: a second call finds the finished stage's checkpoint and does not retrain
    (again,) = sf.distill(teacher, data, 2 * n, n, **kw)
    assert again.checkpoint == stage.checkpoint
    np.testing.assert_array_equal(again.student.model.a, stage.student.model.a)


def test_distilled_sampler_refuses_other_step_count(getkey):
    sde = _sde()
    distilled = sf.Distilled(model=_teacher(sde), grid=sf.DistillationGrid.of(sde, 4))
    assert sf.DistilledDDIM(distilled, steps=4).steps == 4
    with pytest.raises(ValueError, match=r"distilled for 4 steps.*got steps=8"):
        sf.DistilledDDIM(distilled, steps=8)
    with pytest.raises(ValueError, match=r"got t0 = 0.01"):
        sf.sample(distilled, sde, getkey(), (2, 1), sf.DistilledDDIM(distilled), t0=0.01)
    # a teacher distilled for 4 steps teaches 2-step students only
    x0 = jnp.zeros((4, 1))
    with pytest.raises(
        ValueError, match=r"num_steps=1 needs a teacher of 2 \* num_steps = 2 steps.*Distilled model of 4 steps"
    ):
        sf.progressive_distillation_loss(distilled, distilled, x0, key=getkey(), num_steps=1)
    with pytest.raises(ValueError, match=r"start_steps=6, end_steps=4"):
        sf.distill(_teacher(sde), np.zeros((4, 1)), 6, 4, key=getkey(), train_steps=1)


def test_distilled_sampler_on_its_grid_is_ddim(getkey):
    """Off distillation, DistilledDDIM on a uniform grid of N steps is DDIM(steps=N) exactly."""
    sde = _sde()
    teacher = _teacher(sde)
    distilled = sf.Distilled(model=teacher, grid=sf.DistillationGrid.of(sde, 3))
    key = getkey()
    a = sf.sample(distilled, sde, key, (8, 1), sf.DistilledDDIM(distilled)).samples
    b = sf.sample(teacher, sde, key, (8, 1), sf.DDIM(steps=3)).samples
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_guided_target_is_classifier_free_guidance(getkey):
    """(1 + w) x_c - w x_u from the exact class-conditional and unconditional mixtures (computed here, not through
    the wrapper), against the target of a plain teacher + null and of a ClassifierFreeGuidance teacher."""
    sde = _sde()
    means = jnp.array([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]])
    covs = jnp.stack([0.1 * jnp.eye(2), 0.2 * jnp.eye(2), jnp.array([[0.3, 0.1], [0.1, 0.2]])])
    mixture = sf.GaussianMixture(jnp.array([0.3, 0.3, 0.4]), means, covs)
    labelled = sf.LabelledMixture(mixture, jnp.array([0, 1, 1]))
    teacher = sf.LabelledScore(labelled, sde)
    cfg = sf.ClassifierFreeGuidance(teacher, None, -1, sf.Constant(7.0))  # its weight is replaced by 1 + w
    z = jax.random.normal(getkey(), (2,))
    ws = jnp.linspace(0.0, 4.0, 9)
    # every w at once (w traced: the wrapper's lax.cond path), and w = 2.5 as a Python float (no cond)
    plain = jax.jit(jax.vmap(lambda t, w, y: sf.guided_distillation_target(teacher, t, z, w, y, -1), (None, 0, None)))
    wrapped = jax.jit(jax.vmap(lambda t, w, y: sf.guided_distillation_target(cfg, t, z, w, y), (None, 0, None)))
    for t in (0.05, 0.5, 0.95):
        x_u = labelled.unconditional_score(sde).denoise(t, z)
        for label in (0, 1):
            x_c = labelled.conditional_score(sde, label).denoise(t, z)
            want = (1 + ws[:, None]) * x_c[None] - ws[:, None] * x_u[None]
            np.testing.assert_allclose(plain(t, ws, jnp.asarray(label)), want, rtol=0, atol=1e-10)
            np.testing.assert_allclose(wrapped(t, ws, jnp.asarray(label)), want, rtol=0, atol=1e-10)
            got = sf.guided_distillation_target(cfg, t, z, 2.5, jnp.asarray(label))
            np.testing.assert_allclose(got, 3.5 * x_c - 2.5 * x_u, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="needs `null`"):
        sf.guided_distillation_target(teacher, 0.5, z, 1.0, jnp.asarray(0))
    with pytest.raises(ValueError, match="do not pass null= as well"):
        sf.guided_distillation_target(cfg, 0.5, z, 1.0, jnp.asarray(0), -1)


def test_guided_loss_zero_at_target_and_student_starts_at_teacher(getkey):
    sde = _sde()
    mixture = sf.GaussianMixture(
        jnp.array([0.5, 0.5]), jnp.array([[-1.0, 0.0], [1.0, 0.0]]), 0.1 * jnp.stack([jnp.eye(2)] * 2)
    )
    teacher = sf.LabelledScore(sf.LabelledMixture(mixture, jnp.array([0, 1])), sde)

    class ExactGuided(sf.AbstractScoreModel):
        sde: sf.AbstractSDE

        def __call__(self, t, x, cond=None, *, key=None):
            label, w = cond
            alpha, sigma = self.sde.alpha_sigma(t)
            return sf.score_from_x0(x, sf.guided_distillation_target(teacher, t, x, w, label, -1), alpha, sigma)

    x0 = jax.random.normal(getkey(), (64, 2))
    labels = jnp.arange(64) % 2
    kw = dict(key=getkey(), null=-1, w_min=0.0, w_max=4.0)
    assert sf.guided_distillation_loss(ExactGuided(sde), teacher, x0, labels, **kw) < 1e-18
    unguided = sf.ScoreModel(lambda c_noise, x, cond, key=None: teacher(0.5, x, cond[0]), sde, sf.ScorePrediction())
    assert sf.guided_distillation_loss(unguided, teacher, x0, labels, **kw) > 1e-3

    # the w-conditioned network starts as its base network, for every w
    net = sf.MLP(2, width=16, depth=1, num_classes=2, key=getkey())
    net = eqx.tree_at(lambda m: m.out.weight, net, jax.random.normal(getkey(), net.out.weight.shape))
    student = sf.GuidanceWeightMLP(net, key=getkey())
    x = jax.random.normal(getkey(), (2,))
    for w in (0.0, 1.5, 4.0):
        np.testing.assert_allclose(student(0.3, x, (jnp.asarray(1), w)), net(0.3, x, jnp.asarray(1)), atol=1e-14)


def test_guided_stage_two_conditioning_reaches_teacher_and_student(getkey):
    """Stage 2: progressive distillation of a w-conditioned model, cond = (labels, w) per example; a student whose
    denoiser is the target (computed at its own grid point) has zero loss, the teacher's own one step does not."""
    sde = _sde()
    covs = 0.1 * jnp.stack([jnp.eye(2)] * 2)
    mixture = sf.GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-1.0, 0.0], [1.0, 0.0]]), covs)
    labelled = sf.LabelledScore(sf.LabelledMixture(mixture, jnp.array([0, 1])), sde)
    n = 2

    class WTeacher(sf.AbstractScoreModel):
        sde: sf.AbstractSDE

        def __call__(self, t, x, cond=None, *, key=None):
            label, w = cond
            alpha, sigma = self.sde.alpha_sigma(t)
            return sf.score_from_x0(x, sf.guided_distillation_target(labelled, t, x, w, label, -1), alpha, sigma)

    teacher = WTeacher(sde)
    fine = jnp.asarray(sf.DistillationGrid.of(sde, 2 * n).times)

    class TargetStudent(sf.AbstractScoreModel):
        sde: sf.AbstractSDE

        def __call__(self, t, x, cond=None, *, key=None):
            i = _uniform_index(self.sde, t, n)
            target = sf.progressive_distillation_target(teacher, fine[2 * i], fine[2 * i + 1], fine[2 * i + 2], x, cond)
            alpha, sigma = self.sde.alpha_sigma(t)
            return sf.score_from_x0(x, target, alpha, sigma)

    x0 = jax.random.normal(getkey(), (32, 2))
    cond = (jnp.arange(32) % 2, jnp.linspace(0.0, 4.0, 32))
    key = getkey()
    exact = sf.progressive_distillation_loss(TargetStudent(sde), teacher, x0, cond, key=key, num_steps=n)
    one_step = sf.progressive_distillation_loss(teacher, teacher, x0, cond, key=key, num_steps=n)
    assert one_step > 1e-4
    assert exact < 1e-16 * one_step


def test_sample_refuses_a_distilled_model_off_its_grid(getkey):
    sde = _sde()
    distilled = sf.Distilled(model=_teacher(sde), grid=sf.DistillationGrid.of(sde, 4))
    key = getkey()
    for sampler, named in (
        (sf.DDIM(steps=4), "DDIM with steps=4"),  # same step count, but not the sampler it was trained for
        (sf.DDIM(steps=8), "DDIM with steps=8"),
        (sf.ProbabilityFlow(), "ProbabilityFlow"),
        (sf.DistilledDDIM(sf.DistillationGrid.of(sde, 2)), "DistilledDDIM on another grid \\(2 steps"),
    ):
        with pytest.raises(ValueError, match=f"distilled for DDIM on its grid of 4 steps.*got sampler={named}"):
            sf.sample(distilled, sde, key, (2, 1), sampler)
    # the network alone is an ordinary model; on its grid the distilled one samples as before
    a = sf.sample(distilled.model, sde, key, (2, 1), sf.DDIM(steps=4)).samples
    b = sf.sample(distilled, sde, key, (2, 1), sf.DistilledDDIM(distilled)).samples
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_grid_round_trips_through_checkpoints(getkey, tmp_path):
    """The grid is in each stage's checkpoint: `restore_student` gives it back, and resuming a stage with another
    grid (here another end time t0) is refused instead of training a student for the wrong times."""
    sde = _sde()
    teacher = _teacher(sde)
    n = 2
    ts = jnp.asarray(sf.DistillationGrid.of(sde, n).times[:-1])
    student = TabularLinear(sde, jnp.ones(n), jnp.zeros(n), n)
    kw = dict(key=getkey(), train_steps=3, batch_size=8, student=student, checkpoint_dir=tmp_path)
    data = np.asarray(MU + np.sqrt(VAR) * jax.random.normal(getkey(), (64, 1)))
    (stage,) = sf.distill(teacher, data, 2 * n, n, **kw)
    back = sf.restore_student(stage.checkpoint, student)
    assert back.grid == stage.student.grid == sf.DistillationGrid.of(sde, n)
    np.testing.assert_array_equal(back.model.a, stage.student.model.a)
    assert sf.DistillationGrid.from_dict(stage.student.grid.as_dict()) == stage.student.grid
    assert ts.shape == (n,)
    with pytest.raises(ValueError, match=r"trained for grid = .*this call asks for grid = "):
        sf.distill(teacher, data, 2 * n, n, t0=2e-3, **kw)


class LinearGuided(sf.AbstractScoreModel):
    """A w-conditioned student whose denoiser is (1 + a w) x_c - a w x_u (+ b w) on the exact pair: a = 1, b = 0
    is the guided target at every w, and training must find it."""

    labelled: sf.LabelledMixture
    sde: sf.AbstractSDE
    a: jax.Array
    b: jax.Array

    def __call__(self, t, x, cond=None, *, key=None):
        label, w = cond
        labelled = jax.lax.stop_gradient(self.labelled)  # fixed (eigh of equal eigenvalues has no gradient)
        x_c = labelled.conditional_score(self.sde, label).denoise(t, x)
        x_u = labelled.unconditional_score(self.sde).denoise(t, x)
        aw = self.a * w
        x0 = (1 + aw) * x_c - aw * x_u + self.b * w
        alpha, sigma = self.sde.alpha_sigma(t)
        return sf.score_from_x0(x, x0, alpha, sigma)


def test_guided_distill_stage_one_learns_the_guided_pair(getkey, tmp_path):
    sde = _sde()
    mixture = sf.GaussianMixture(
        jnp.array([0.5, 0.5]), jnp.array([[-1.0, 0.0], [1.0, 0.0]]), 0.2 * jnp.stack([jnp.eye(2)] * 2)
    )
    labelled = sf.LabelledMixture(mixture, jnp.array([0, 1]))
    teacher = sf.ClassifierFreeGuidance(sf.LabelledScore(labelled, sde), None, -1, sf.Constant(1.0))
    student = LinearGuided(labelled, sde, jnp.asarray(0.0), jnp.zeros(2))
    labels = np.arange(256) % 2
    data = np.asarray(mixture.sample(seed=getkey(), sample_shape=256))
    kw = dict(key=getkey(), train_steps=300, batch_size=64, student=student, learning_rate=0.05)
    stage = sf.guided_distill(teacher, data, labels, w_range=(0.0, 4.0), checkpoint_dir=tmp_path, **kw)
    assert stage.finished and stage.w_range == (0.0, 4.0)
    # a student trained on (w x_c - (w - 1) x_u), i.e. guidance off by one, would sit at a = 1 - 1/w on average
    np.testing.assert_allclose(stage.student.a, 1.0, atol=0.02)
    np.testing.assert_allclose(stage.student.b, 0.0, atol=0.02)
    # resume does not retrain; another range is refused
    again = sf.guided_distill(teacher, data, labels, w_range=(0.0, 4.0), checkpoint_dir=tmp_path, **kw)
    np.testing.assert_array_equal(again.student.a, stage.student.a)
    with pytest.raises(ValueError, match=r"trained for guidance_range = \[0.0, 4.0\].*asks for guidance_range = "):
        sf.guided_distill(teacher, data, labels, w_range=(0.0, 2.0), checkpoint_dir=tmp_path, **kw)


def test_guidance_weight_net_starts_at_its_network(getkey):
    """GuidanceWeightNet reaches any network through its `label` field (the U-Net's the same way: an MLP here,
    since building a U-Net takes tens of seconds on a loaded machine; the digits benchmark runs the U-Net)."""
    net = sf.MLP(4, width=16, depth=1, num_classes=3, key=getkey())
    net = eqx.tree_at(lambda m: m.out.weight, net, jax.random.normal(getkey(), net.out.weight.shape))
    student = sf.GuidanceWeightNet(net, key=getkey())
    x = jax.random.normal(getkey(), (4,))
    label = jnp.asarray(2)
    call = eqx.filter_jit(lambda m, w: m(0.3, x, (label, w)))
    base = eqx.filter_jit(lambda m: m(0.3, x, label))(net)
    for w in (0.0, 2.5):
        np.testing.assert_allclose(call(student, jnp.asarray(w)), base, atol=1e-12)
    # the w path is live once trained: a non-zero last layer makes the output depend on w
    weight = jax.random.normal(getkey(), student.w_out.weight.shape)
    moved = eqx.tree_at(lambda m: m.w_out.weight, student, weight)
    assert float(jnp.max(jnp.abs(call(moved, jnp.asarray(0.0)) - call(moved, jnp.asarray(3.0))))) > 1e-4
    with pytest.raises(TypeError, match="needs a class-conditional network"):
        sf.GuidanceWeightNet(sf.MLP(4, width=16, depth=1, key=getkey()), key=getkey())
