"""Networks: embeddings against their formulas, zero-init, jit/vmap consistency, dropout, attention
equivariance, class conditioning, fitting a fixed regression batch, and constructor validation."""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoreflow as sf
from scoreflow._nn.unet import AttentionBlock, ResBlock, _conv


@pytest.fixture
def getkey():
    """Overrides conftest's `getkey` with "rbg" PRNG keys: these networks initialise dozens of
    differently shaped tensors, and each new shape costs an XLA compile that is ~3x cheaper for rbg
    than for threefry on CPU (measured: tiny UNet build 4.5 s vs 13 s CPU time)."""
    counter = itertools.count()
    return lambda: jax.random.key(next(counter), impl="rbg")


def tiny_unet(key, **kw):
    kw = {"channels": (8, 16), "attention_resolutions": (4,), "groups": 4, "num_heads": 2} | kw
    return sf.UNet(8, kw.pop("in_channels", 1), key=key, **kw)


def unzero(net, key):
    """Give the zero-initialised output layer random weights, so the outputs are informative."""
    where = (lambda n: n.out) if isinstance(net, sf.MLP) else (lambda n: n.conv_out)
    layer = where(net)
    k1, k2 = jax.random.split(key)
    w = 0.3 * jax.random.normal(k1, layer.weight.shape, layer.weight.dtype)
    b = 0.3 * jax.random.normal(k2, layer.bias.shape, layer.bias.dtype)
    return eqx.tree_at(lambda n: (where(n).weight, where(n).bias), net, (w, b))


# ----------------------------------------------------------------------------------- embeddings


def test_sinusoidal_equals_formula():
    dim, period = 12, 10_000.0
    emb = sf.SinusoidalEmbedding(dim, max_period=period)
    for c in (-2.7, 0.0, 0.31, 5.0):
        expected = [math.sin(c * period ** (-i / 6)) for i in range(6)]
        expected += [math.cos(c * period ** (-i / 6)) for i in range(6)]
        np.testing.assert_allclose(emb(jnp.asarray(c)), np.array(expected), rtol=0, atol=1e-13)


def test_fourier_formula_frequencies_and_frozen(getkey):
    scale = 16.0
    emb = sf.FourierEmbedding(4096, scale, key=getkey())
    w = np.asarray(emb.weights)
    # sample std of 2048 N(0, scale^2) draws: relative standard error 1/sqrt(2*2048) ~ 1.6%
    assert abs(w.std() / scale - 1) < 0.06
    c = 0.37
    expected = np.concatenate([np.sin(2 * np.pi * c * w), np.cos(2 * np.pi * c * w)])
    np.testing.assert_allclose(emb(c), expected, rtol=0, atol=1e-10)
    grads = jax.grad(lambda e: e(0.37).sum())(emb)
    assert float(jnp.max(jnp.abs(grads.weights))) == 0.0  # fixed features: no gradient


# ------------------------------------------------------------------------------- zero init / jit


def test_zero_init_outputs_exactly_zero(getkey):
    mlp = sf.MLP(3, width=32, depth=2, key=getkey())
    x = jax.random.normal(getkey(), (3,))
    assert np.array_equal(mlp(0.4, x), np.zeros(3))
    unet = tiny_unet(getkey(), out_channels=3)
    img = jax.random.normal(getkey(), (1, 8, 8))
    assert np.array_equal(unet(-1.2, img), np.zeros((3, 8, 8)))
    # Under X0Prediction a fresh network predicts x0 = 0: the score is exactly -x / sigma^2,
    # the score of data concentrated at the origin.
    sde = sf.VPSDE(sf.LinearSchedule())
    model = sf.ScoreModel(mlp, sde, sf.X0Prediction())
    _, sigma = sde.alpha_sigma(jnp.asarray(0.5))
    np.testing.assert_allclose(model(0.5, x), -x / sigma**2, rtol=1e-12)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0)])
def test_channels_last_conv_equals_equinox_conv(kernel, stride, padding, getkey):
    """The U-Net's convolutions run channels-last (fast inside loops on CPU) with equinox's parameters: the
    same numbers as `eqx.nn.Conv2d.__call__`, for the 3x3, stride-2 and 1x1 convolutions the U-Net uses."""
    conv = eqx.nn.Conv2d(5, 7, kernel, stride=stride, padding=padding, key=getkey())
    x = jax.random.normal(getkey(), (5, 8, 8))
    np.testing.assert_allclose(_conv(conv, x), conv(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_jit_and_vmap_match_eager(kind, getkey):
    if kind == "mlp":
        net = unzero(sf.MLP(4, width=32, depth=2, num_classes=3, key=getkey()), getkey())
        xs = jax.random.normal(getkey(), (5, 4))
    else:
        net = unzero(tiny_unet(getkey(), num_classes=3), getkey())
        xs = jax.random.normal(getkey(), (5, 1, 8, 8))
    labels = jnp.array([0, 1, 2, 3, 1])
    cs = jnp.linspace(-2.0, 2.0, 5)
    eager = np.stack([net(c, x, y) for c, x, y in zip(cs, xs, labels, strict=True)])
    assert float(np.max(np.abs(eager))) > 1e-2  # the comparison is not between zeros
    batched = eqx.filter_jit(jax.vmap(net))(cs, xs, labels)
    np.testing.assert_allclose(batched, eager, rtol=1e-10, atol=1e-12)
    # a shared (unbatched) c_noise, as samplers pass it
    single = eqx.filter_jit(jax.vmap(net, in_axes=(None, 0, 0)))(cs[1], xs, labels)
    np.testing.assert_allclose(single[1], eager[1], rtol=1e-10, atol=1e-12)


def test_dropout_only_with_key(getkey):
    k_init, k_out = getkey(), getkey()
    net = unzero(tiny_unet(k_init, dropout=0.3), k_out)
    plain = unzero(tiny_unet(k_init, dropout=0.0), k_out)
    x = jax.random.normal(getkey(), (1, 8, 8))
    c = jnp.asarray(0.2)
    det = net(c, x)
    # no key: no dropout, deterministic, and identical to the same weights built without dropout
    np.testing.assert_array_equal(net(c, x), det)
    np.testing.assert_array_equal(plain(c, x), det)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    d1 = net(c, x, key=k1)
    np.testing.assert_array_equal(net(c, x, key=k1), d1)  # same key, same mask
    assert float(jnp.mean(jnp.abs(d1 - det))) > 1e-3 * float(jnp.mean(jnp.abs(det)))
    assert float(jnp.mean(jnp.abs(net(c, x, key=k2) - d1))) > 1e-3 * float(jnp.mean(jnp.abs(det)))
    # a key given to a dropout-free network changes nothing
    np.testing.assert_array_equal(plain(c, x, key=k1), det)


def test_attention_block_permutation_equivariant(getkey):
    block = AttentionBlock(8, num_heads=2, groups=4, key=getkey())
    x = jax.random.normal(getkey(), (8, 4, 4))
    perm = jax.random.permutation(getkey(), 16)

    def permute(a):
        return a.reshape(8, 16)[:, perm].reshape(8, 4, 4)

    out = block(x)
    assert float(jnp.max(jnp.abs(out - x))) > 1e-2  # attention does something
    np.testing.assert_allclose(block(permute(x)), permute(out), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------- conditioning


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_class_embedding_changes_output_only_when_set(kind, getkey):
    k_init, k_out = getkey(), getkey()
    if kind == "mlp":
        make = lambda **kw: unzero(sf.MLP(3, width=32, depth=2, key=k_init, **kw), k_out)
        x = jax.random.normal(getkey(), (3,))
    else:
        make = lambda **kw: unzero(tiny_unet(k_init, **kw), k_out)
        x = jax.random.normal(getkey(), (1, 8, 8))
    cond_net, uncond = make(num_classes=3), make()
    c = jnp.asarray(0.5)
    outs = [cond_net(c, x, jnp.asarray(y)) for y in range(4)]
    for i in range(4):
        for j in range(i):
            assert float(jnp.max(jnp.abs(outs[i] - outs[j]))) > 1e-4
    np.testing.assert_array_equal(cond_net(c, x), outs[3])  # cond=None is the null label
    # Zeroing the label table turns the conditional network into the unconditional one exactly:
    # every other weight is shared, so the label vector is the only difference.
    table = cond_net.label.table
    zeroed = eqx.tree_at(lambda n: n.label.table.weight, cond_net, jnp.zeros_like(table.weight))
    np.testing.assert_allclose(zeroed(c, x, jnp.asarray(1)), uncond(c, x), rtol=1e-13, atol=1e-14)
    with pytest.raises(ValueError, match="cond"):
        uncond(c, x, jnp.asarray(1))
    with pytest.raises(Exception, match="cond"):  # out of range: caught by eqx.error_if, jit or not
        eqx.filter_jit(cond_net)(c, x, jnp.asarray(4))


# ------------------------------------------------------------------------------------- fitting


def _fit(net, inputs, targets, steps=200, lr=1e-2):
    cs, xs = inputs
    opt = optax.adam(lr)
    params, static = eqx.partition(net, eqx.is_inexact_array)

    def loss_fn(p):
        out = jax.vmap(eqx.combine(p, static))(cs, xs)
        return jnp.mean((out - targets) ** 2)

    @jax.jit
    def run(p):
        def step(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p)
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (p, _), losses = jax.lax.scan(step, (p, opt.init(p)), None, length=steps)
        return losses, loss_fn(p)

    return run(params)


def test_mlp_fits_regression_batch(getkey):
    net = sf.MLP(2, width=64, depth=2, key=getkey())
    cs = jnp.linspace(-2.0, 2.0, 16)
    xs = jax.random.normal(getkey(), (16, 2))
    targets = jnp.sin(2.0 * xs) * cs[:, None] + 0.5 * xs[:, ::-1]
    losses, final = _fit(net, (cs, xs), targets)
    # zero-init: the initial loss is exactly the mean square of the targets
    np.testing.assert_allclose(losses[0], jnp.mean(targets**2), rtol=1e-12)
    assert float(final) < 0.1 * float(losses[0]), (float(losses[0]), float(final))


def test_unet_fits_regression_batch(getkey):
    net = tiny_unet(getkey())
    cs = jnp.array([-1.5, -0.5, 0.5, 1.5])
    xs = jax.random.normal(getkey(), (4, 1, 8, 8))
    grid = jnp.linspace(-1.0, 1.0, 8)
    pattern = jnp.sin(3.0 * grid)[:, None] * jnp.cos(2.0 * grid)[None, :]
    targets = 0.5 * xs + cs[:, None, None, None] * pattern[None, None]
    losses, final = _fit(net, (cs, xs), targets)
    np.testing.assert_allclose(losses[0], jnp.mean(targets**2), rtol=1e-12)
    assert float(final) < 0.1 * float(losses[0]), (float(losses[0]), float(final))


# ---------------------------------------------------------------------------------- validation


def test_one_channel_per_group_would_cancel_the_embedding(getkey):
    """Why the U-Net refuses one channel per GroupNorm group: a residual block adds the embedding as a shift
    per channel and group-normalises next, so with groups = channels its output does not depend on the
    embedding at all (to rounding), while with two channels per group it does."""
    x = jax.random.normal(getkey(), (8, 4, 4))
    e1, e2 = jax.random.normal(getkey(), (2, 16))
    k = getkey()
    change = {}
    for groups in (8, 4):
        block = ResBlock(8, 8, 16, groups, 0.0, key=k)
        change[groups] = float(jnp.max(jnp.abs(block(x, e1) - block(x, e2))))
    assert change[8] < 1e-9 and change[4] > 1e-2, change


def test_cli_unet_with_8_channels_sees_its_label(getkey):
    """`--channels 8` (the smallest the command accepts) builds a U-Net whose output moves with the class."""
    from scoreflow._cli.table import TABLE

    c = {"channels": [8], "res_blocks": 1, "attention": [], "dropout": 0.0, "num_classes": 10}
    net = unzero(TABLE["network"]["unet"](c, (1, 8, 8), getkey()), getkey())
    x = jax.random.normal(getkey(), (1, 8, 8))
    assert float(jnp.max(jnp.abs(net(0.3, x, 1) - net(0.3, x, 7)))) > 1e-3


@pytest.mark.parametrize(
    "make, name",
    [
        (
            lambda k: sf.UNet(10, 1, channels=(8, 16, 16), attention_resolutions=(), key=k),
            "image_size",
        ),
        (lambda k: sf.UNet(0, 1, key=k), "image_size"),
        (lambda k: sf.UNet(8, 0, key=k), "in_channels"),
        (lambda k: sf.UNet(8, 1, out_channels=0, key=k), "out_channels"),
        (lambda k: sf.UNet(8, 1, channels=(8, 12), groups=8, key=k), "groups"),
        (lambda k: sf.UNet(8, 1, channels=(), key=k), "channels"),
        (lambda k: sf.UNet(8, 1, channels=(8, 16), key=k), "2 channels per GroupNorm group"),
        (lambda k: sf.UNet(8, 1, channels=(8, 0), key=k), "channels"),
        (
            lambda k: sf.UNet(8, 1, channels=(8, 16), attention_resolutions=(16,), groups=4, key=k),
            "attention",
        ),
        (lambda k: sf.UNet(8, 1, channels=(8, 16), dropout=1.0, groups=4, key=k), "dropout"),
        (lambda k: sf.UNet(8, 1, channels=(8, 16), num_heads=3, groups=4, key=k), "num_heads"),
        (lambda k: sf.UNet(8, 1, channels=(8, 16), num_res_blocks=0, groups=4, key=k), "num_res_blocks"),
        (lambda k: sf.UNet(8, 1, channels=(8, 16), num_classes=0, groups=4, key=k), "num_classes"),
        (lambda k: sf.MLP(0, key=k), "data_dim"),
        (lambda k: sf.MLP(2, width=0, key=k), "width"),
        (lambda k: sf.MLP(2, depth=0, key=k), "depth"),
        (lambda k: sf.MLP(2, embedding_dim=7, key=k), "embedding_dim"),
        (lambda k: sf.SinusoidalEmbedding(7), "dim"),
        (lambda k: sf.SinusoidalEmbedding(8, max_period=1.0), "max_period"),
        (lambda k: sf.FourierEmbedding(8, 0.0, key=k), "scale"),
    ],
)
def test_bad_constructor_arguments_raise(make, name):
    with pytest.raises(ValueError, match=name):
        make(jax.random.key(0))


def test_wrong_input_shape_names_x(getkey):
    with pytest.raises(ValueError, match="`x`"):
        sf.MLP(3, width=8, depth=1, key=getkey())(0.1, jnp.zeros(4))
    with pytest.raises(ValueError, match="`x`"):
        tiny_unet(getkey())(0.1, jnp.zeros((1, 16, 16)))
