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
    sde = _sde()
    means = jnp.array([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]])
    covs = jnp.stack([0.1 * jnp.eye(2), 0.2 * jnp.eye(2), jnp.array([[0.3, 0.1], [0.1, 0.2]])])
    mixture = sf.GaussianMixture(jnp.array([0.3, 0.3, 0.4]), means, covs)
    teacher = sf.LabelledScore(sf.LabelledMixture(mixture, jnp.array([0, 1, 1])), sde)
    z = jax.random.normal(getkey(), (2,))
    for t in (0.05, 0.5, 0.95):
        for w in np.linspace(0.0, 4.0, 9):
            for label in (0, 1):
                got = sf.guided_distillation_target(teacher, t, z, w, jnp.asarray(label), -1)
                cfg = sf.ClassifierFreeGuidance(teacher, jnp.asarray(label), -1, sf.Constant(1.0 + float(w)))
                np.testing.assert_allclose(got, cfg.denoise(t, z), rtol=0, atol=1e-10)


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
