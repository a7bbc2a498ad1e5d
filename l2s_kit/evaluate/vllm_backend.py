"""A vLLM generation backend for GPUs: the same rows as :class:`TransformersBackend`, much faster.

Optional (``pip install 'l2s_kit[vllm]'`` on a CUDA machine); ``vllm`` is imported only when a
:class:`VLLMBackend` is created. Tensor parallelism over ``tensor_parallel_size`` GPUs.

Settings, as in the paper: greedy (``temperature=0, top_p=1``, one sample), or R1-style sampling
(``temperature=0.6, top_p=0.95``, ``n`` samples per question, accuracy averaged over them):
``GenerationSettings(**PAPER_GREEDY)`` / ``GenerationSettings(**R1_SAMPLING, n=8)``.

The contract is the transformers backend's (see :class:`l2s_kit.evaluate.Generation`):

- each sample is its own request with ``n=1`` and the seed of (``seed``, prompt, sample index),
  the transformers backend's per-sample seed, so sample ``j`` of a prompt does not depend on the
  batch, on ``n`` or on an interrupted run (the random streams differ from the transformers
  backend's: same seed, same distribution, not the same draws);
- text decoded without special tokens, cut just after the first stop string, which is kept
  (``include_stop_str_in_output``); stop strings that are special tokens of the tokenizer (e.g.
  ``<|im_end|>``) are passed as ``stop_token_ids``, as the transformers backend treats them as EOS;
- ``n_tokens`` = ``len(token_ids)`` of the output: the generated ids up to and including the EOS
  or the token that completed the stop string; ``finish_reason`` "length" when ``max_tokens`` ran
  out, else "stop".
"""

from __future__ import annotations

import os
from pathlib import Path

from l2s_kit.evaluate.backends import (
    DEFAULT_SETTINGS,
    Generation,
    GenerationError,
    GenerationSettings,
    sample_seed,
)

PAPER_GREEDY = {"temperature": 0.0, "top_p": 1.0}  # the paper's main tables
R1_SAMPLING = {"temperature": 0.6, "top_p": 0.95}  # DeepSeek-R1's recommended sampling


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise GenerationError(
            "the vLLM backend needs vllm, which is not installed (it runs on CUDA GPUs): "
            "pip install 'l2s_kit[vllm]', or use the transformers backend") from e
    return vllm


class VLLMBackend:
    """Generation with ``vllm.LLM``.

    ``model``: a local checkpoint folder. ``tensor_parallel_size``: GPUs per model.
    ``dtype``: "auto" (as stored), "bfloat16", "float16" or "float32". ``max_model_len``: prompt +
    generation tokens (default: the model's). ``gpu_memory_utilization``: share of each GPU vLLM
    may take. Further keyword arguments go to ``vllm.LLM`` as they are. ``llm``: an already built
    ``vllm.LLM`` (then the other arguments are not used).
    """

    name = "vllm"

    def __init__(self, model: str | os.PathLike | None = None, *, tensor_parallel_size: int = 1,
                 dtype: str = "auto", max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.9, llm=None, progress: bool = True,
                 **llm_kwargs):
        vllm = _import_vllm()
        self._vllm = vllm
        if llm is None:
            if model is None:
                raise GenerationError("VLLMBackend needs a checkpoint folder (model=...) or llm=")
            path = Path(model)
            if not (path / "config.json").is_file():
                raise GenerationError(f"{path} is not a checkpoint folder (no config.json); give "
                                      "the folder of a Hugging Face model")
            if not (isinstance(tensor_parallel_size, int) and tensor_parallel_size >= 1):
                raise GenerationError(f"tensor_parallel_size must be a positive integer, got "
                                      f"{tensor_parallel_size!r}")
            llm = vllm.LLM(**self.llm_kwargs(path, tensor_parallel_size, dtype, max_model_len,
                                             gpu_memory_utilization, **llm_kwargs))
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self.progress = progress

    @staticmethod
    def llm_kwargs(path, tensor_parallel_size: int = 1, dtype: str = "auto",
                   max_model_len: int | None = None, gpu_memory_utilization: float = 0.9,
                   **extra) -> dict:
        """Keyword arguments of ``vllm.LLM`` for a checkpoint folder (the engine is seeded; the
        per-request seeds decide the samples)."""
        kwargs = {"model": str(path), "tokenizer": str(path), "dtype": dtype,
                  "tensor_parallel_size": tensor_parallel_size, "seed": 0,
                  "gpu_memory_utilization": gpu_memory_utilization, "trust_remote_code": False,
                  "enable_prefix_caching": True}
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        return {**kwargs, **extra}

    def _special(self, stop: tuple[str, ...]) -> tuple[str, ...]:
        special = set(self.tokenizer.all_special_tokens) | set(self.tokenizer.get_added_vocab())
        return tuple(s for s in stop if s in special)

    def sampling_kwargs(self, settings: GenerationSettings) -> dict:
        """``SamplingParams`` keyword arguments shared by every request of ``settings`` (the
        per-sample ``seed`` is added by :meth:`requests`)."""
        special = self._special(settings.stop)
        return {
            "n": 1, "temperature": float(settings.temperature),
            "top_p": float(settings.top_p) if settings.temperature > 0 else 1.0,
            "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
            "frequency_penalty": 0.0, "max_tokens": settings.max_new_tokens,
            "stop": [s for s in settings.stop if s not in special],
            "stop_token_ids": [self.tokenizer.convert_tokens_to_ids(s) for s in special],
            "include_stop_str_in_output": True, "skip_special_tokens": True,
            "ignore_eos": False,
        }

    def requests(self, prompts: list[str], settings: GenerationSettings
                 ) -> list[tuple[int, int, dict]]:
        """(prompt index, sample index, SamplingParams kwargs) of every request, in order."""
        base = self.sampling_kwargs(settings)
        return [(i, j, {**base, "seed": sample_seed(settings.seed, p, j)})
                for i, p in enumerate(prompts) for j in range(settings.n)]

    def generate(self, prompts: list[str], settings: GenerationSettings = DEFAULT_SETTINGS
                 ) -> list[list[Generation]]:
        """``settings.n`` samples for each prompt (outer list = prompts, inner = samples)."""
        if isinstance(prompts, str):
            raise GenerationError("generate takes a list of prompts, not one string")
        reqs = self.requests(prompts, settings)
        params = [self._vllm.SamplingParams(**kw) for _, _, kw in reqs]
        outputs = self.llm.generate([prompts[i] for i, _, _ in reqs], params,
                                    use_tqdm=self.progress)
        if len(outputs) != len(reqs):
            raise GenerationError(f"vLLM returned {len(outputs)} results for {len(reqs)} requests")
        out: list[list[Generation]] = [[] for _ in prompts]
        for (i, _, _), res in zip(reqs, outputs):
            out[i].append(to_generation(res.outputs[0]))
        return out


def to_generation(completion) -> Generation:
    """A vLLM ``CompletionOutput`` as a :class:`Generation` (text, ids counted, finish reason)."""
    reason = "length" if completion.finish_reason == "length" else "stop"
    return Generation(completion.text, len(completion.token_ids), reason)
