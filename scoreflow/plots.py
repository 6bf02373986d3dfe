"""Plots for a run folder (matplotlib, Agg backend): sample grids, training curves, the noise schedule."""

import math
import os

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_grid(images: np.ndarray, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile `(n, C, H, W)` images in [-1, 1] into one `(rows*(H+pad)-pad, cols*(W+pad)-pad, C)` array in [0, 1]."""
    n, c, h, w = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    out = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad, c))
    x = np.clip((np.asarray(images, np.float64) + 1.0) / 2.0, 0.0, 1.0)
    for i in range(n):
        r, q = divmod(i, ncols)
        out[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = np.moveaxis(x[i], 0, -1)
    return out


def save_samples(path: str | os.PathLike, samples: np.ndarray, density=None, title: str = "samples") -> None:
    """Images `(n, C, H, W)` as a grid; 2-D points `(n, 2)` as a scatter over the exact density if given."""
    plt = _pyplot()
    samples = np.asarray(samples)
    if samples.ndim == 4:
        grid = image_grid(samples)
        fig, ax = plt.subplots(figsize=(6, 6 * grid.shape[0] / grid.shape[1]))
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
    elif samples.ndim == 2 and samples.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(5, 5))
        lim = float(np.max(np.abs(samples))) * 1.1 + 1e-9
        if density is not None:
            import jax.numpy as jnp

            g = np.linspace(-lim, lim, 200)
            xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
            p = np.exp(np.asarray(density.log_prob(jnp.asarray(xy)))).reshape(200, 200)
            ax.contour(g, g, p, levels=8, colors="tab:blue", linewidths=0.7)
        ax.scatter(samples[:, 0], samples[:, 1], s=2, c="k")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(samples.reshape(samples.shape[0], -1).T, lw=0.5)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_curves(path: str | os.PathLike, records: list[dict], reference: dict[str, float] | None = None) -> None:
    """Training curves from metrics records (`step` plus numbers): one panel per metric, log-scaled steps.

    `reference` adds horizontal lines (e.g. the test bits/dim and the baselines) to the `bpd` panel.
    """
    plt = _pyplot()
    keys = sorted({k for r in records for k, v in r.items() if k not in ("step", "time") and isinstance(v, float)})
    keys = keys or ["loss"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=True):
        pts = [(r["step"], r[k]) for r in records if k in r]
        if pts:
            s, v = zip(*pts, strict=True)
            ax.plot(s, v, lw=1)
        if k in ("bpd", "loss") and reference:
            for i, (name, val) in enumerate(reference.items()):
                ax.axhline(val, ls="--", lw=0.8, color=f"C{i + 1}", label=f"{name} {val:.3f}")
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.set_title(k)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_schedule(
    path: str | os.PathLike, t: np.ndarray, log_snr: np.ndarray, initial: np.ndarray | None = None
) -> None:
    r"""The log-SNR $\lambda(t)$ of the trained SDE (and, if given, at initialisation)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(t, log_snr, label="trained")
    if initial is not None:
        ax.plot(t, initial, ls="--", label="initial")
    ax.set_xlabel("t")
    ax.set_ylabel(r"log SNR $\lambda(t)$")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
