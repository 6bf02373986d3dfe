"""The one table from command-line strings to scoreflow objects. Everything after it works with strategy objects.

Each entry is a factory taking what it needs (the resolved config `c`, shapes, keys). The model families
(`--model continuous`, `--model d3pm`) are not here: they are registered in `registry.py`.
"""

import diffrax

import scoreflow as sf


def unet_groups(channels) -> int:
    """GroupNorm groups of a command-line U-Net: 8 (the usual), fewer where a level is too thin to keep two
    channels per group (`--channels` are multiples of 8, so 8 channels get 4 groups)."""
    return max(1, min(8, min(channels) // 2))


TABLE = {
    "schedule": {
        "learned": lambda c, key: sf.LearnedSchedule(
            c["gamma_min"], c["gamma_max"], hidden=c["schedule_hidden"], key=key
        ),
        "cosine": lambda c, key: sf.CosineSchedule(c["gamma_min"], c["gamma_max"]),
        "linear": lambda c, key: sf.LinearSchedule(),
        "fixed-linear": lambda c, key: sf.FixedLinearSchedule(c["gamma_min"], c["gamma_max"]),
    },
    "sde": {
        "vp": lambda schedule: sf.VPSDE(schedule),
        "subvp": lambda schedule: sf.SubVPSDE(schedule),
        "ve": lambda schedule: sf.VESDE(),
        "edm": lambda schedule: sf.EDMSDE(),
    },
    "parameterisation": {
        "eps": sf.EpsPrediction,
        "x0": sf.X0Prediction,
        "v": sf.VPrediction,
        "score": sf.ScorePrediction,
        "edm": sf.EDMPreconditioning,
    },
    "network": {
        "unet": lambda c, shape, key: sf.UNet(
            shape[-1],
            shape[0],
            channels=tuple(c["channels"]),
            num_res_blocks=c["res_blocks"],
            attention_resolutions=tuple(c["attention"]),
            dropout=c["dropout"],
            num_classes=c.get("num_classes"),
            groups=unet_groups(c["channels"]),
            key=key,
        ),
        "mlp": lambda c, shape, key: sf.MLP(
            shape[0], width=c["width"], depth=c["depth"], num_classes=c.get("num_classes"), key=key
        ),
    },
    "weighting": {
        "simple": sf.SimpleWeighting,
        "likelihood": sf.LikelihoodWeighting,
        "v": sf.VWeighting,
        "edm": sf.EDMWeighting,
        "elbo": sf.ELBOWeighting,
        "sigmoid": sf.SigmoidWeighting,
        "edm-monotone": sf.EDMMonotoneWeighting,
    },
    "loss": {"vdm": "VDM continuous-time VLB (bits/dim)", "dsm": "denoising score matching with --weighting"},
    # D3PM transitions over `num_classes` data levels and `steps` steps (Austin et al., 2021, App. B).
    "transition": {
        "gaussian": lambda num_classes, steps: sf.GaussianTransition(
            num_classes, steps, sf.LinearBetaSchedule(0.02, 1.0)
        ),
        "uniform": lambda num_classes, steps: sf.UniformTransition(num_classes, steps, sf.CosineBetaSchedule()),
        "absorbing": lambda num_classes, steps: sf.AbsorbingTransition(
            num_classes, steps, sf.MutualInformationSchedule()
        ),
    },
    "sampler": {
        "pf": lambda steps: sf.ProbabilityFlow(),
        "ddim": lambda steps: sf.DDIM(steps=steps),
        "dpm-solver": lambda steps: sf.DPMSolverPP(steps=steps),
        "euler-maruyama": lambda steps: sf.PredictorCorrector(sf.EulerMaruyama(), sf.NoCorrector(), steps=steps),
        "pc": lambda steps: sf.PredictorCorrector(steps=steps),
        "edm-heun": lambda steps: sf.EDMHeun(steps=steps),
    },
    "solver": {
        "tsit5": diffrax.Tsit5,
        "dopri5": diffrax.Dopri5,
        "dopri8": diffrax.Dopri8,
        "bosh3": diffrax.Bosh3,
        "heun": diffrax.Heun,
    },
    "divergence": {
        "exact": lambda probes: sf.ExactTrace(),
        "hutchinson": lambda probes: sf.Hutchinson(num_probes=probes),
    },
    "dequantisation": {
        "discretised": lambda sde: sf.DiscretisedBound(sde),
        "uniform": lambda sde: sf.UniformDequantisation(),
    },
}
