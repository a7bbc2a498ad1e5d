"""Checkpoint folders: lazy reading, the streaming sharded writer, atomic files and folders.

>>> from l2s_kit.io import Checkpoint
>>> ck = Checkpoint("models/system1")            # reads headers only
>>> ck.read("model.embed_tokens.weight", rows=slice(0, 8))
"""

from l2s_kit.io.atomic import (
    atomic_file,
    atomic_folder,
    check_apart,
    check_out,
    publish,
    temp_sibling,
)
from l2s_kit.io.checkpoint import (
    GENERATION_CONFIG,
    INDEX_FILE,
    SINGLE_FILE,
    TOKENIZER_FILES,
    VOCABULARY_FILES,
    Checkpoint,
    StateDictSource,
    TensorInfo,
    WeightHasher,
    natural_key,
    tensor_bytes,
    weights_hash,
)
from l2s_kit.io.dtypes import DTYPE_NAMES, DTYPES, SAFE_DTYPES
from l2s_kit.io.identity import cache_dir, checkpoint_hash
from l2s_kit.io.paths import reference_data_dir
from l2s_kit.io.writer import CheckpointWriter, copy_side_files, plan_shards

__all__ = [
    "DTYPES", "DTYPE_NAMES", "GENERATION_CONFIG", "INDEX_FILE", "SAFE_DTYPES", "SINGLE_FILE",
    "TOKENIZER_FILES", "VOCABULARY_FILES", "Checkpoint", "CheckpointWriter", "StateDictSource", "TensorInfo",
    "WeightHasher", "atomic_file", "atomic_folder", "cache_dir", "check_apart", "check_out", "checkpoint_hash", "copy_side_files", "natural_key",
    "plan_shards", "publish", "reference_data_dir", "tensor_bytes", "temp_sibling", "weights_hash",
]
