"""`scoreflow train --cond class` and `sample --class/--guidance/--interval/--guide`: the config recorded, label
dropout reaching the objective, samples equal to the library's guidance wrappers, digit metrics recorded, and
clear refusals. Tiny models and 2-step samplers keep it fast."""

import contextlib
import io
import json
import os
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf
import scoreflow.data as sfd
import scoreflow.metrics as sfm
from scoreflow._cli import continuous
from scoreflow._cli.main import main
from scoreflow._cli.run import Run


TINY = [
    "--data", "digits", "--channels", "8", "--loss", "vdm", "--schedule", "cosine", "--batch-size", "16",
    "--nll-examples", "0", "--eval-repeats", "1", "--num-samples", "10", "--sampler", "ddim", "--sample-steps", "2",
    "--log-every", "2", "--checkpoint-every", "2", "--keep", "5", "--no-progress", "--steps", "4",
]  # fmt: skip
TOY = ["--data", "toy:ring8", "--network", "mlp", "--width", "16", "--depth", "1", "--loss", "dsm", "--schedule",
       "cosine", "--batch-size", "16", "--nll-examples", "0", "--num-samples", "4", "--sampler", "ddim",
       "--sample-steps", "2", "--no-progress", "--steps", "2"]  # fmt: skip


def _main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True, scope="module")
def float32():
    """The command runs in float32 (the test run's float64 default would give the U-Net float64 weights and the
    float32 digits; the command is not made for that mix)."""
    with jax.enable_x64(False):
        yield


@pytest.fixture(scope="module")
def cheap_classifier():
    """An untrained classifier stands in for the cached one: these tests check the wiring, test_metrics.py the
    classifier (training it here would double the file's time)."""
    clf = sfm.DigitClassifier(key=jax.random.key(0))
    original = sfm.digit_classifier
    sfm.digit_classifier = lambda **kw: clf
    yield clf
    sfm.digit_classifier = original


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cheap_classifier):
    root = tmp_path_factory.mktemp("runs")
    cond, toy = str(root / "cond"), str(root / "toy")
    assert _main(["train", *TINY, "--cond", "class", "--out", cond])[0] == 0
    assert _main(["train", *TOY, "--out", toy])[0] == 0
    return cond, toy


def _model(run, step=None):
    c = Run(run).read_config()["config"]
    state, _ = continuous.build_state(c, (1, 8, 8))
    if step is None:
        state, _ = Run(run).restore(state, continuous.CONTINUOUS, c)
    else:
        import scoreflow.train as sft

        state, _ = sft.load_checkpoint(sft.checkpoint_path(Run(run).checkpoints, step), state)
    return c, state.ema


def test_config_and_info(runs):
    cond, _ = runs
    c = json.load(open(os.path.join(cond, "config.json")))["config"]
    assert (c["cond"], c["num_classes"], c["label_dropout"]) == ("class", 10, 0.1)
    code, out, _ = _main(["info", cond])
    assert code == 0 and "cond=class" in out and "num_classes=10" in out
    _, model = _model(cond)
    assert model.network.label.num_classes == 10  # the U-Net's label table: 10 classes + the null label


def test_label_dropout_reaches_the_objective():
    c = dict(continuous.DEFAULTS, loss="dsm", schedule="cosine", channels=[8], cond="class", num_classes=10)
    model = continuous.build_model(c, (1, 8, 8))
    # the U-Net's last convolution starts at zero (its output ignores the labels): give it weights
    conv = model.network.conv_out
    model = eqx.tree_at(
        lambda m: m.network.conv_out.weight, model, jax.random.normal(jax.random.key(1), conv.weight.shape)
    )
    ds = sfd.load_digits()
    x, y = jnp.asarray(ds.train[:6]), jnp.asarray(ds.train_labels[:6].astype(np.int32))
    key = jax.random.key(3)
    k_drop, k_loss = jax.random.split(key)
    w = sf.SimpleWeighting()
    for rate, cond in ((1.0, jnp.full(6, 10, jnp.int32)), (0.0, y)):
        obj = continuous.build_objective(dict(c, label_dropout=rate), ds.num_levels)
        got, _ = obj(model, (x, y), key)
        want = sf.batch_dsm_loss(model, x, cond, key=k_loss, weighting=w)
        assert float(got) == pytest.approx(float(want), rel=1e-6)
    # the labels matter (so the two checks above can tell the rates apart): all-null and true labels differ
    null_loss = sf.batch_dsm_loss(model, x, jnp.full(6, 10, jnp.int32), key=k_loss, weighting=w)
    assert abs(float(null_loss) - float(want)) > 1e-6


def test_sample_guided_equals_library(runs, cheap_classifier):
    cond, _ = runs
    c, model = _model(cond)
    code, out, _ = _main(["sample", cond, "--class", "3", "--guidance", "2", "--num-samples", "6", "--no-progress"])
    assert code == 0, out
    stem = os.path.join(cond, "samples_step000004_class3_g2")
    assert os.path.exists(stem + ".png")
    got = np.load(stem + ".npy")
    labels = jnp.full(6, 3, jnp.int32)
    cfg = sf.ClassifierFreeGuidance(model, None, 10, sf.Constant(2.0))
    want = continuous.draw_samples(cfg, (1, 8, 8), c, 6, continuous.sample_key(c["seed"]), labels)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # metrics: printed and recorded, equal to scoreflow.metrics on the written samples
    rec = [json.loads(line) for line in open(os.path.join(cond, "sample_metrics.jsonl"))][-1]
    ds = sfd.load_digits()
    x = np.clip(got, -1, 1)
    assert rec["class_accuracy"] == pytest.approx(sfm.class_accuracy(cheap_classifier, x, np.full(6, 3)))
    ref = ds.test[ds.test_labels == 3]
    assert rec["frechet_distance"] == pytest.approx(sfm.frechet_feature_distance(cheap_classifier, x, ref))
    assert f"class accuracy {rec['class_accuracy']:.3f}" in out and "test digits of class 3" in out


def test_sample_interval_and_autoguidance(runs):
    cond, _ = runs
    c, model = _model(cond)
    _, weak = _model(cond, step=2)
    key = continuous.sample_key(c["seed"])
    labels = jnp.arange(4, dtype=jnp.int32) % 10
    argv = ["sample", cond, "--num-samples", "4", "--guidance", "3", "--no-progress", "--no-metrics"]
    assert _main([*argv, "--interval", "0.5,4"])[0] == 0
    got = np.load(os.path.join(cond, "samples_step000004_g3_interval0.5-4.npy"))
    cfg = sf.ClassifierFreeGuidance(model, None, 10, sf.Interval(0.5, 4.0, 3.0))
    np.testing.assert_allclose(got, continuous.draw_samples(cfg, (1, 8, 8), c, 4, key, labels), atol=1e-5)
    assert _main([*argv, "--guide", cond, "--guide-step", "2"])[0] == 0
    got = np.load(os.path.join(cond, "samples_step000004_g3_autoguided.npy"))
    auto = sf.Guided(model, weak, sf.Constant(3.0))
    np.testing.assert_allclose(got, continuous.draw_samples(auto, (1, 8, 8), c, 4, key, labels), atol=1e-5)


def test_old_unconditional_config_still_loads(runs, tmp_path):
    _, toy = runs
    old = str(tmp_path / "old")
    shutil.copytree(toy, old)
    cfg = json.load(open(os.path.join(old, "config.json")))
    for k in ("cond", "num_classes", "label_dropout"):
        del cfg["config"][k]
    json.dump(cfg, open(os.path.join(old, "config.json"), "w"))
    assert _main(["sample", old, "--no-progress"])[0] == 0


@pytest.mark.parametrize(
    "which, extra, expected",
    [
        ("toy", ["--class", "3"], "--class 3: RUN"),
        ("toy", ["--guidance", "2"], "is unconditional; classifier-free guidance needs a --cond class run"),
        ("cond", ["--class", "12"], "--class 12: RUN"),
        ("cond", ["--interval", "0.1,2"], "--interval 0.1,2 needs --guidance G"),
        ("cond", ["--guide", "toy", "--guidance", "2"], "its data have shape (2,)"),
        ("cond", ["--guide", "cond", "--guide-step", "3", "--guidance", "2"], "--guide-step 3: "),
        ("toy", ["--guide", "cond", "--guidance", "2"], "its data have shape (1, 8, 8)"),
    ],
)
def test_sample_refusals(runs, capsys, which, extra, expected):
    cond, toy = runs
    paths = {"cond": cond, "toy": toy}
    extra = [paths.get(e, e) if i and extra[i - 1] == "--guide" else e for i, e in enumerate(extra)]
    with pytest.raises(SystemExit) as e:
        main(["sample", paths[which], *extra, "--no-progress", "--no-metrics"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and expected in err, err


def test_train_refusals(tmp_path, capsys):
    for argv, expected in (
        (
            ["--data", "toy:ring8", "--network", "mlp", "--loss", "dsm", "--cond", "class"],
            "--cond class needs labelled data",
        ),
        (["--label-dropout", "0.2"], "--label-dropout 0.2 applies to --cond class only"),
        (["--cond", "class", "--label-dropout", "1.0"], "expected a number in [0, 1)"),
    ):
        with pytest.raises(SystemExit) as e:
            main(["train", *argv, "--steps", "1", "--out", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and expected in err, err
    with pytest.raises(SystemExit) as e:
        main(["sample", str(tmp_path), "--interval", "5,1"])
    assert e.value.code == 2 and "expected LO,HI with 0 <= LO < HI" in capsys.readouterr().err
