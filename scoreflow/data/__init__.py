"""Data edge: built-in digits (17 grey levels or binarised), character text and toy mixtures, the user's arrays
and PNG folders, and bits/dim baselines.

Host-side (numpy) code only; the pure core never imports it.
"""

from ._dataset import DataError as DataError, Dataset as Dataset
from .baselines import (
    baselines as baselines,
    categorical_bits_per_dim as categorical_bits_per_dim,
    compressor_bits_per_dim as compressor_bits_per_dim,
)
from .digits import (
    DIGITS_LEVELS as DIGITS_LEVELS,
    load_binary_digits as load_binary_digits,
    load_digits as load_digits,
)
from .files import load_array_file as load_array_file, load_png_folder as load_png_folder
from .text import load_text as load_text, load_text8_dataset as load_text8_dataset
from .toy import TOY_MIXTURES as TOY_MIXTURES, load_toy as load_toy, toy_mixture as toy_mixture
