"""Bits-back lossless compression with diffusion models: VDM (continuous VP) and D3PM codecs over constriction's
ANS stack, the discrete-time VDM bound, and the checked file container."""

from .base import (
    BBANS as BBANS,
    AbstractBitsBackCodec as AbstractBitsBackCodec,
    AbstractOrder as AbstractOrder,
    BitsBackError as BitsBackError,
    EncodeStats as EncodeStats,
    Interleaved as Interleaved,
    LatentOutOfWindowError as LatentOutOfWindowError,
    StreamMismatchError as StreamMismatchError,
)
from .coder import CoderError as CoderError, StackExhaustedError as StackExhaustedError
from .container import (
    CorruptStreamError as CorruptStreamError,
    DataMismatchError as DataMismatchError,
    ModelMismatchError as ModelMismatchError,
    PlatformMismatchError as PlatformMismatchError,
    compress_images as compress_images,
    decompress_images as decompress_images,
    read_compressed_header as read_compressed_header,
)
from .continuous import VDMCodec as VDMCodec
from .discrete import D3PMCodec as D3PMCodec
from .discrete_time import (
    DiscreteVLBTerms as DiscreteVLBTerms,
    discrete_vdm_terms as discrete_vdm_terms,
    discrete_vdm_vlb as discrete_vdm_vlb,
    vp_gammas as vp_gammas,
    vp_posterior as vp_posterior,
    vp_reverse as vp_reverse,
)
