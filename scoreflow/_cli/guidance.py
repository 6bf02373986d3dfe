"""`sample RUN --class K --guidance G [--interval LO,HI] [--guide RUN2 [--guide-step N]]`: classifier-free guidance
of a `--cond class` run, or autoguidance by a weaker run, built from the library's `ClassifierFreeGuidance`,
`Guided`, `Constant` and `Interval`; and the offline digit metrics (`scoreflow.metrics`) of the samples."""

import argparse
import dataclasses
import math

import numpy as np

import scoreflow as sf

from .options import UsageError, nonneg_float, nonneg_int


def interval(s: str) -> tuple[float, float]:
    """`LO,HI`: noise levels sigma/alpha with 0 <= LO < HI (HI may be inf)."""
    parts = s.split(",")
    try:
        lo, hi = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        lo = hi = math.nan
    if not (0.0 <= lo < hi and math.isfinite(lo) and not math.isnan(hi)):
        raise argparse.ArgumentTypeError(f"expected LO,HI with 0 <= LO < HI (noise levels sigma/alpha), got {s!r}")
    return lo, hi


def add_arguments(s) -> None:
    g = s.add_argument_group("guidance (continuous runs)")
    g.add_argument(
        "--class",
        dest="class_label",
        type=nonneg_int,
        default=None,
        help="draw every sample of this class (a --cond class run; default: classes 0, 1, 2, ... in turn)",
    )
    g.add_argument(
        "--guidance",
        type=nonneg_float,
        default=None,
        help="guidance weight g: s = s_ref + g (s_main - s_ref); classifier-free (the null label as reference) for "
        "a --cond class run, autoguidance with --guide (default: 1, no guidance)",
    )
    g.add_argument(
        "--interval",
        type=interval,
        default=None,
        metavar="LO,HI",
        help="apply the guidance only at noise levels sigma/alpha in [LO, HI] (Kynkäänniemi et al., 2024); "
        "weight 1 elsewhere",
    )
    g.add_argument(
        "--guide",
        default=None,
        metavar="RUN2",
        help="autoguidance (Karras et al., 2024): guide RUN by the weaker run RUN2 (smaller, or trained for less) "
        "of the same data, SDE and conditioning",
    )
    g.add_argument(
        "--guide-step",
        type=nonneg_int,
        default=None,
        help="the checkpoint step of RUN2 to guide with (default: its newest); RUN2 may be RUN itself",
    )
    g.add_argument(
        "--no-metrics",
        action="store_true",
        help="skip the digit metrics (class accuracy, Fréchet distance of classifier features)",
    )


GUIDANCE_FLAGS = {"class_label": "--class", "guidance": "--guidance", "interval": "--interval", "guide": "--guide"}


def given(a: argparse.Namespace) -> list[str]:
    """The guidance flags given on the command line."""
    return [f for k, f in GUIDANCE_FLAGS.items() if getattr(a, k, None) is not None]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to sample: the score model, the labels (or None), a name suffix and a description."""

    model: object
    labels: np.ndarray | None
    suffix: str
    what: str


def plan(a: argparse.Namespace, run_path: str, c: dict, model, n: int, guide=None) -> Plan:
    """The guided (or plain) model for the options in `a`; `guide` is the loaded weak model for `--guide`."""
    k = c.get("num_classes")
    if a.class_label is not None:
        if k is None:
            raise UsageError(
                f"--class {a.class_label}: RUN {run_path!r} is unconditional (trained without --cond class); "
                "train a class-conditional run with `scoreflow train --cond class`"
            )
        if a.class_label >= k:
            raise UsageError(f"--class {a.class_label}: RUN {run_path!r} has classes 0..{k - 1}")
    if a.interval is not None and a.guidance is None:
        raise UsageError(f"--interval {a.interval[0]:g},{a.interval[1]:g} needs --guidance G (the weight inside it)")
    if a.guide_step is not None and a.guide is None:
        raise UsageError(f"--guide-step {a.guide_step} needs --guide RUN2")
    g = 1.0 if a.guidance is None else a.guidance
    if k is None and guide is None and a.guidance is not None:
        raise UsageError(
            f"--guidance {g:g}: RUN {run_path!r} is unconditional; classifier-free guidance needs a --cond class "
            "run, autoguidance needs --guide RUN2"
        )
    labels = None
    if k is not None:
        labels = np.arange(n, dtype=np.int32) % k if a.class_label is None else np.full(n, a.class_label, np.int32)
    weight = sf.Constant(g) if a.interval is None else sf.Interval(a.interval[0], a.interval[1], g)
    where = "" if a.interval is None else f" for sigma/alpha in [{a.interval[0]:g}, {a.interval[1]:g}]"
    suffix = ("" if a.class_label is None else f"_class{a.class_label}") + ("" if a.guidance is None else f"_g{g:g}")
    if a.interval is not None:
        suffix += f"_interval{a.interval[0]:g}-{a.interval[1]:g}"
    if guide is not None:
        try:
            guided = sf.Guided(model, guide, weight)
        except ValueError as e:
            raise UsageError(f"--guide {a.guide!r}: {e}") from None
        suffix += "_autoguided"
        return Plan(guided, labels, suffix, f"autoguidance by {a.guide} with g = {g:g}{where}")
    if k is not None and (g != 1.0 or a.interval is not None):
        cfg = sf.ClassifierFreeGuidance(model, None, k, weight)
        return Plan(cfg, labels, suffix, f"classifier-free guidance g = {g:g}{where}")
    return Plan(model, labels, suffix, "conditional, no guidance" if k is not None else "")


def check_guide(a: argparse.Namespace, c: dict, ds, c2: dict, ds2) -> None:
    """The weak run must model the same data shape and conditioning as RUN."""
    if tuple(ds2.shape) != tuple(ds.shape):
        raise UsageError(
            f"--guide {a.guide!r}: its data have shape {tuple(ds2.shape)} ({c2['data']}), RUN's {tuple(ds.shape)} "
            f"({c['data']}); autoguidance needs a weaker model of the same data"
        )
    if c2.get("num_classes") != c.get("num_classes"):
        raise UsageError(
            f"--guide {a.guide!r}: it is {_cond_text(c2)} but RUN is {_cond_text(c)}; both must be conditioned alike"
        )


def _cond_text(c: dict) -> str:
    k = c.get("num_classes")
    return "unconditional" if k is None else f"class-conditional ({k} classes)"


def digit_metrics(ds, samples: np.ndarray, labels: np.ndarray | None, class_label: int | None) -> dict | None:
    """Class accuracy (if labelled) and the Fréchet distance of classifier features to the test digits (those of
    `class_label` if given), for 8x8 digit runs; None for other data."""
    if tuple(ds.shape) != (1, 8, 8) or ds.test_labels is None or not ds.name.startswith("digits"):
        return None
    from .. import metrics

    clf = metrics.digit_classifier()
    x = np.clip(samples, -1.0, 1.0).astype(np.float32)
    ref = ds.test if class_label is None else ds.test[ds.test_labels == class_label]
    out = {
        "frechet_distance": metrics.frechet_feature_distance(clf, x, ref),
        "reference": f"{len(ref)} test digits" + ("" if class_label is None else f" of class {class_label}"),
        "num_samples": len(x),
    }
    if labels is not None:
        out["class_accuracy"] = metrics.class_accuracy(clf, x, labels)
    return out
