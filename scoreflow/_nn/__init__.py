from .embedding import (
    AbstractEmbedding as AbstractEmbedding,
    FourierEmbedding as FourierEmbedding,
    SinusoidalEmbedding as SinusoidalEmbedding,
)
from .mlp import MLP as MLP
from .unet import UNet as UNet
