"""Checkpoint folders: lazy reading, the streaming sharded writer, atomic files and folders.

>>> from l2s_kit.io import Checkpoint
>>> ck = Checkpoint("models/system1")            # reads headers only
>>> ck.read("model.embed_tokens.weight", rows=slice(0, 8))
"""

from l2s_kit.io.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "atomic": ("atomic_file", "atomic_folder", "check_apart", "check_out", "check_place", "check_results_folder", "check_room",
               "claim_file", "claim_output", "exclusive", "publish", "remember_output",
               "results_folder", "temp_sibling", "user_cache", "write_csv"),
    "checkpoint": ("Checkpoint", "StateDictSource", "TensorInfo", "WeightHasher", "natural_key",
                   "tensor_bytes", "weights_hash"),
    "files": ("GENERATION_CONFIG", "INDEX_FILE", "SINGLE_FILE", "TOKENIZER_FILES", "VOCABULARY_FILES"),
    "dtypes": ("DTYPE_NAMES", "DTYPES", "SAFE_DTYPES"),
    "shared": ("home_paths", "href", "md_text", "shown_path", "shown_paths"),
    "hub": ("hub_id", "resolve_checkpoint"),
    "identity": ("cache_dir", "checkpoint_hash", "checkpoint_key", "files_hash"),
    "paths": ("reference_data_dir",),
    "writer": ("CheckpointWriter", "copy_side_files", "plan_shards"),
})
