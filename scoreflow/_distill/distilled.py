"""A distilled model: a score model that carries the grid it was distilled for."""

from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Conditioning, ScalarLike
from .._model import AbstractScoreModel
from .._sampler.distilled import DistillationGrid
from .._sde import AbstractSDE


class Distilled(AbstractScoreModel):
    r"""`model` (the student) together with the `DistillationGrid` it was trained on.

    It is a score model like any other (calls, `denoise`, `eps` and `v` go to `model`), but it is only accurate
    as a DDIM sampler on exactly `grid`: sample it with `DistilledDDIM(distilled)`, which uses that grid and
    refuses any other step count. Off the grid (other samplers, likelihoods) it is whatever `model` is there.
    """

    model: AbstractScoreModel
    grid: DistillationGrid

    def __init__(self, model: AbstractScoreModel, grid: DistillationGrid):
        self.model = model
        self.grid = grid

    def __check_init__(self):
        if not isinstance(self.model, AbstractScoreModel):
            raise TypeError(f"Distilled needs `model` to be an AbstractScoreModel; got model={self.model!r}")
        if not isinstance(self.grid, DistillationGrid):
            raise TypeError(f"Distilled needs `grid` to be a DistillationGrid; got grid={self.grid!r}")

    @property
    def sde(self) -> AbstractSDE:  # type: ignore[override]
        return self.model.sde

    @property
    def steps(self) -> int:
        return self.grid.steps

    def __call__(
        self, t: ScalarLike, x: Float[Array, "*data"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "*data"]:
        return self.model(t, x, cond, key=key)

    def denoise(
        self, t: ScalarLike, x: Float[Array, "*data"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "*data"]:
        return self.model.denoise(t, x, cond, key=key)
