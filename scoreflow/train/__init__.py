"""Training edge: train state, jitted step for any loss, EMA, gradient accumulation, data parallelism,
checkpoints and the loop. The pure core never imports it."""

from .checkpoint import (
    FORMAT_VERSION as FORMAT_VERSION,
    CheckpointError as CheckpointError,
    clean_temporaries as clean_temporaries,
    load_checkpoint as load_checkpoint,
    read_checkpoint as read_checkpoint,
    read_header as read_header,
    save_checkpoint as save_checkpoint,
)
from .loop import (
    batch_indices as batch_indices,
    checkpoint_path as checkpoint_path,
    list_checkpoints as list_checkpoints,
    restore_latest as restore_latest,
    save_state as save_state,
    train_loop as train_loop,
)
from .sharding import (
    batch_sharding as batch_sharding,
    initialise_distributed as initialise_distributed,
    local_slice as local_slice,
    make_mesh as make_mesh,
    replicate as replicate,
    replicated as replicated,
    shard_batch as shard_batch,
)
from .state import (
    TrainState as TrainState,
    ema_update as ema_update,
    init_state as init_state,
    make_optimiser as make_optimiser,
    trainable as trainable,
)
from .step import CustomGradient as CustomGradient, LossFn as LossFn, make_train_step as make_train_step
