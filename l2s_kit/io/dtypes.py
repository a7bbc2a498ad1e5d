"""Dtype names, in one table: the safetensors codes a checkpoint may hold, and the names recipes,
backends and the CLI accept."""

from __future__ import annotations

import torch

# Names a user writes (recipes' dtype / out_dtype, backends' --dtype).
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64,
                                  "float16": torch.float16, "bfloat16": torch.bfloat16}

# safetensors header codes -> torch dtypes (what the reader accepts and the writer emits).
SAFE_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        SAFE_DTYPES[_name] = getattr(torch, _attr)
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in SAFE_DTYPES.items()}
