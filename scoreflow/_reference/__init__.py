from .analytic import AnalyticScore as AnalyticScore, marginal as marginal
from .mixture import GaussianMixture as GaussianMixture
