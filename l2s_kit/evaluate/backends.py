"""Generation backends: prompts in, decoded samples with their token counts out.

A backend is anything with a ``name`` and ``generate(prompts, settings)`` returning, per prompt,
``settings.n`` :class:`Generation` objects. :class:`TransformersBackend` runs Hugging Face
``model.generate`` in batches with left padding, on CPU or CUDA.

Results do not depend on how prompts are batched:

- greedy decoding (``temperature=0``) gives the same text as generating one prompt at a time
  (up to floating-point ties);
- sampling draws sample ``j`` of a prompt from its own random stream, seeded by
  (``seed``, prompt text, ``j``), through the Gumbel-max trick (argmax of the tempered, top-p
  filtered logits plus Gumbel noise is an exact sample). The same seed repeats on the same kind of
  device whatever the batch size or the other prompts, so an interrupted evaluation that resumes
  produces what an uninterrupted one would have.

Token counts are the number of generated ids, EOS (or the token that completed a stop string)
included; the text is never re-tokenized.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from l2s_kit.errors import L2SError
from l2s_kit.io.files import VOCABULARY_FILES
from l2s_kit.io.seeds import seed_from

# Tokens decoded at the end of each sequence at every step to look for stop strings, beyond the
# length of the longest stop string (each token decodes to at least one character, except special
# tokens and pieces of multi-byte characters).
_STOP_WINDOW_MARGIN = 8
# how a batch of rows is decoded: refill (continuous batching: a row that ends leaves the batch
# and a waiting one takes its place; l2s_kit.evaluate.refill) or static (model.generate on fixed
# batches, each running until its longest row ends)
SCHEDULERS = ("refill", "static")


class GenerationError(L2SError, ValueError):
    """Generation settings or a backend's inputs are invalid."""


LENGTH_LIMITS = {"8k": 8192, "10k": 10240}  # the paper's named limits


def _limit(value):
    """A generated-token limit: an int, a whole number as text, or a name of LENGTH_LIMITS
    (anything else is left for the check, which names it)."""
    if isinstance(value, str):
        text = value.strip().lower()
        return LENGTH_LIMITS.get(text, int(text) if text.isdigit() else value)
    return value


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode. Everything but ``batch_size`` determines the outputs and is recorded."""

    max_new_tokens: int = 256  # generated tokens per sample, EOS included ("8k", "8192" taken)
    temperature: float = 0.0  # 0 = greedy; > 0 samples
    top_p: float = 1.0  # nucleus sampling mass, in (0, 1]
    n: int = 1  # samples per prompt; n > 1 needs temperature > 0
    seed: int = 0  # sampling seed (sample j of a prompt is a function of seed, prompt, j)
    stop: tuple[str, ...] = ()  # stop strings; the text keeps the stop string
    # rows decoded at once (throughput only): None = as many as fit on the device
    batch_size: int | None = field(default=None, compare=False)

    def __post_init__(self):
        # the one place a length limit is parsed: every face (command line, YAML, notebook
        # parameters, Python) hands on what it was given
        object.__setattr__(self, "max_new_tokens", _limit(self.max_new_tokens))
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        checks = [
            ("max_new_tokens", isinstance(self.max_new_tokens, int)
             and not isinstance(self.max_new_tokens, bool) and self.max_new_tokens >= 1,
             f"a positive integer or one of {', '.join(LENGTH_LIMITS)}"),
            ("temperature", isinstance(self.temperature, (int, float))
             and 0 <= self.temperature < math.inf, "a finite number >= 0 (0 = greedy)"),
            ("top_p", isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1,
             "a number in (0, 1]"),
            ("n", isinstance(self.n, int) and self.n >= 1, "a positive integer"),
            ("seed", isinstance(self.seed, int), "an integer"),
            ("batch_size", self.batch_size is None
             or (isinstance(self.batch_size, int) and self.batch_size >= 1),
             "a positive integer, or None for as many rows as fit on the device"),
            ("stop", all(isinstance(s, str) and s for s in self.stop),
             "a list of non-empty strings"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise GenerationError(
                    f"generation setting {name}={getattr(self, name)!r} is invalid; it must be {what}")
        if self.n > 1 and self.temperature == 0:
            raise GenerationError(
                f"generation setting n={self.n} asks for several samples per prompt, but "
                "temperature=0 (greedy) would repeat the same one; set temperature > 0 or n=1")

    def to_dict(self) -> dict:
        """The settings that determine the outputs, as JSON-ready values (no ``batch_size``)."""
        d = asdict(self)
        d.pop("batch_size")
        d["stop"] = list(self.stop)
        return d


DEFAULT_SETTINGS = GenerationSettings()  # greedy, 256 new tokens: what evaluate() and sweeps use
# The built-in family: greedy, 96 new tokens (System 2's longest answers are ~70), large batches.
FAMILY_SETTINGS = GenerationSettings(max_new_tokens=96, batch_size=256)


@dataclass(frozen=True)
class Generation:
    """One sample: decoded text, number of generated token ids, and why generation ended.

    ``text`` is decoded with special tokens skipped (so an EOS does not appear in it) and, when a
    stop string ended the sample, cut just after the first stop string (which is kept).
    ``n_tokens`` counts generated ids up to and including the EOS or the token that completed the
    stop string; ``finish_reason`` is ``"stop"`` for those, ``"length"`` when ``max_new_tokens``
    ran out.
    """

    text: str
    n_tokens: int
    finish_reason: Literal["stop", "length"]


@runtime_checkable
class Backend(Protocol):
    """Generates ``settings.n`` samples for each prompt: outer list = prompts, inner = samples."""

    name: str

    def generate(self, prompts: list[str], settings: GenerationSettings) -> list[list[Generation]]:
        ...


def sample_seed(seed: int, prompt: str, sample: int) -> int:
    """The seed of sample ``sample`` of ``prompt``: independent of batch size and resuming."""
    return seed_from(seed, sample, prompt)


def _dtype(dtype):
    import torch

    from l2s_kit.io.dtypes import DTYPES

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype or "auto"
    if dtype not in DTYPES:
        raise GenerationError(f"dtype {dtype!r} is not one of {['auto', *DTYPES]}")
    return DTYPES[dtype]


def has_tokenizer(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a tokenizer (a vocabulary file, not just special tokens)."""
    return any((Path(path) / f).is_file() for f in VOCABULARY_FILES)


class TransformersBackend:
    """Batched generation with Hugging Face ``transformers``.

    ``model`` is a local checkpoint folder (loaded with ``AutoModelForCausalLM`` and
    ``AutoTokenizer``; ``dtype`` None = as stored) or an already loaded model, given with its
    ``tokenizer`` (an object, or a folder to load it from). ``device`` is where a folder's model
    goes (default "cpu"); a loaded model is moved only when ``device`` is given. The tokenizer is
    switched to left padding (its EOS is used as padding when it has no pad token).

    ``scheduler``: ``refill`` (default; continuous batching, :mod:`l2s_kit.evaluate.refill`: at
    most ``settings.batch_size`` rows in flight, a row that ends replaced by a waiting one) or
    ``static`` (``model.generate`` on fixed batches); both give the same outputs.

    End of a sample: an EOS id of the model's generation config or the tokenizer, a stop string,
    or ``max_new_tokens``. A stop string that is a special token of the tokenizer (e.g.
    ``<|im_end|>``) is treated as one more EOS id, since decoded text skips special tokens.
    """

    name = "transformers"

    def __init__(self, model, tokenizer=None, device: str | None = None, dtype=None,
                 progress: bool = True, scheduler: str = "refill"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not (path / "config.json").is_file():
                raise GenerationError(f"{path} is not a checkpoint folder (no config.json); give "
                                      "the folder of a Hugging Face model")
            if tokenizer is None and not has_tokenizer(path):
                raise GenerationError(
                    f"{path}: no tokenizer files (tokenizer.json, vocab.json, tokenizer.model, "
                    "...); copy them from the model it was made from (for a merge: System 2's "
                    "folder, or merge again with --tokenizer-source)")
            model = AutoModelForCausalLM.from_pretrained(path, **_dtype_kwarg(_dtype(dtype)))
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            model.to(device or "cpu")
        elif tokenizer is None:
            raise GenerationError("TransformersBackend: a loaded model needs its tokenizer "
                                  "(tokenizer=...)")
        elif device is not None:
            model.to(device)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.progress = progress
        if scheduler not in SCHEDULERS:
            raise GenerationError(f"scheduler {scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        self.scheduler = scheduler
        gen_cfg = getattr(model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        self.eos_ids = [i for i in dict.fromkeys([*eos, tokenizer.eos_token_id]) if i is not None]
        if not self.eos_ids:
            raise GenerationError("neither the model's generation config nor the tokenizer "
                                  "names an EOS token; set generation_config.eos_token_id")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(self.eos_ids[0])
        tokenizer.padding_side = "left"
        self.pad_id = tokenizer.pad_token_id
        self.bos_id = getattr(gen_cfg, "bos_token_id", None)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _special(self, stop: tuple[str, ...]) -> tuple[str, ...]:
        """The stop strings that are special tokens (skipped by decoding, so ended by id)."""
        special = set(self.tokenizer.all_special_tokens) | set(self.tokenizer.get_added_vocab())
        return tuple(s for s in stop if s in special)

    def generate(self, prompts: list[str], settings: GenerationSettings = GenerationSettings()
                 ) -> list[list[Generation]]:
        """``settings.n`` samples for each prompt (outer list = prompts, inner = samples)."""
        import torch
        from tqdm.auto import tqdm

        if isinstance(prompts, str):
            raise GenerationError("generate takes a list of prompts, not one string")
        self._check_context(prompts, settings)
        special = self._special(settings.stop)
        eos_ids = list(dict.fromkeys(
            [*self.eos_ids, *(self.tokenizer.convert_tokens_to_ids(s) for s in special)]))
        stop = tuple(s for s in settings.stop if s not in special)
        from l2s_kit.evaluate.refill import OUT_OF_MEMORY, RefillUnsupported

        out: list[list[Generation]] = [[] for _ in prompts]
        if self.scheduler == "refill":
            try:
                return self._generate_refill(prompts, settings, eos_ids, stop)
            except RefillUnsupported:
                self.scheduler = "static"  # this model's cache: static batches from now on
        # longest first: less padding per batch, and memory errors show up in the first batch
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        size = max(1, self.batch_size(prompts, settings) // settings.n)
        waiting = [order[i:i + size] for i in range(0, len(order), size)]
        with tqdm(total=len(prompts), desc="generate", unit="prompt",
                  disable=not self.progress) as bar:
            while waiting:
                batch = waiting.pop(0)
                rows = [(i, j) for i in batch for j in range(settings.n)]
                try:
                    with torch.inference_mode():
                        gens = self._generate_rows([prompts[i] for i, _ in rows],
                                                   [j for _, j in rows], settings, eos_ids, stop)
                except OUT_OF_MEMORY:
                    if len(batch) == 1:
                        raise
                    _warn(f"out of memory with {len(rows)} rows in a batch: going on with "
                          f"{len(rows) // 2} (set the batch size by hand to skip this)")
                    half = (len(batch) + 1) // 2
                    rest = [i for b in waiting for i in b]
                    waiting = [batch[k:k + half] for k in range(0, len(batch), half)]
                    waiting += [rest[k:k + half] for k in range(0, len(rest), half)]
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    continue
                for (i, _), g in zip(rows, gens):
                    out[i].append(g)
                bar.update(len(batch))
        return out

    def batch_size(self, texts: list[str], settings: GenerationSettings) -> int:
        """Rows decoded at once: ``settings.batch_size``, or when it is None the most that
        fit (:func:`auto_batch_size`)."""
        if settings.batch_size is not None:
            return settings.batch_size
        longest = max((len(ids) for ids in self.tokenizer(list(texts[:64]))["input_ids"]),
                      default=1)
        return auto_batch_size(self.model, longest, settings.max_new_tokens)

    def _generate_refill(self, prompts: list[str], settings: GenerationSettings,
                         eos_ids: list[int], stop: tuple[str, ...]) -> list[list[Generation]]:
        """``generate`` by continuous batching (:mod:`l2s_kit.evaluate.refill`): a row that
        ends leaves the batch and a waiting one takes its place."""
        import torch
        from tqdm.auto import tqdm

        from l2s_kit.evaluate.refill import RefillDecoder

        rows = [(i, j) for i in range(len(prompts)) for j in range(settings.n)]
        texts = [prompts[i] for i, _ in rows]
        eos, stop_step = set(eos_ids), [None] * len(rows)
        window = max((len(s) for s in stop), default=0) + _STOP_WINDOW_MARGIN
        generators: dict[int, torch.Generator] = {}

        def choose(logits, which: list[int]):
            if settings.temperature == 0:
                return logits.argmax(dim=-1)
            for r in which:
                if r not in generators:
                    generators[r] = torch.Generator(logits.device).manual_seed(
                        sample_seed(settings.seed, texts[r], rows[r][1]))
            return sampled_scores(logits, [generators[r] for r in which], settings.temperature,
                                  settings.top_p).argmax(dim=-1)

        def done(r: int, ids: list[int]) -> bool:
            if ids[-1] in eos or len(ids) >= settings.max_new_tokens:
                return True
            if stop and any(s in self._decode(ids[-window:]) for s in stop):
                stop_step[r] = len(ids)
                return True
            return False

        def reset(r: int) -> None:  # the row starts again: the same seed, the same sample
            generators.pop(r, None)
            stop_step[r] = None

        # longest prompt first: the first prefill shows a memory error at once
        order = sorted(range(len(rows)), key=lambda r: -len(texts[r]))
        slots = self.batch_size(texts, settings)
        with tqdm(total=len(rows), desc="generate", unit="sample",
                  disable=not self.progress) as bar:
            decoder = RefillDecoder(self.model, self.tokenizer, slots, choose, done, bar,
                                    reset=reset, warn=_warn)
            ids = decoder.run(texts, order)
        self.last_steps, self.last_batch_size = decoder.steps, slots
        out: list[list[Generation]] = [[] for _ in prompts]
        for r, (i, _) in enumerate(rows):
            out[i].append(self._finish(ids[r], eos_ids, stop, stop_step[r], settings))
        return out

    def _check_context(self, prompts: list[str], settings: GenerationSettings) -> None:
        """Warn (once per call, counting them) when prompts plus ``max_new_tokens`` exceed the
        model's context (``max_position_embeddings``): such samples are cut short or degrade."""
        import warnings

        limit = getattr(self.model.config, "max_position_embeddings", None)
        if not isinstance(limit, int) or not prompts:
            return
        lengths = [len(ids) for ids in self.tokenizer(list(prompts))["input_ids"]]
        over = [n for n in lengths if n + settings.max_new_tokens > limit]
        if over:
            warnings.warn(
                f"{len(over)} of {len(prompts)} prompts (up to {max(over)} tokens) plus "
                f"max_new_tokens={settings.max_new_tokens} exceed the model's context of {limit} "
                "tokens (max_position_embeddings in config.json): their responses may be cut short "
                "or degrade; lower max_new_tokens, shorten the prompts, or check the config (a "
                "merge takes System 1's unless config_source says otherwise)", stacklevel=3)

    def _generate_rows(self, texts: list[str], samples: list[int], settings: GenerationSettings,
                       eos_ids: list[int], stop: tuple[str, ...]) -> list[Generation]:
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        enc = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
        prompt_len = enc["input_ids"].shape[1]
        # Every decoding knob is set explicitly, so that a checkpoint's generation_config.json
        # (repetition penalty, top-k, ...) cannot change the evaluation.
        config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens, min_length=0, do_sample=False, num_beams=1,
            num_return_sequences=1, temperature=1.0, top_k=50, top_p=1.0, repetition_penalty=1.0,
            no_repeat_ngram_size=0, eos_token_id=eos_ids, pad_token_id=self.pad_id,
            bos_token_id=self.bos_id)
        processors = LogitsProcessorList()
        if settings.temperature > 0:
            seeds = [sample_seed(settings.seed, t, j) for t, j in zip(texts, samples)]
            processors.append(_SeededSampler(seeds, settings.temperature, settings.top_p))
        stopper = _StopStrings(self.tokenizer, stop, prompt_len, eos_ids) if stop else None
        ids = self.model.generate(**enc, generation_config=config, logits_processor=processors,
                                  stopping_criteria=StoppingCriteriaList(
                                      [stopper] if stopper else []))
        generated = ids[:, prompt_len:].tolist()
        return [self._finish(row, eos_ids, stop, stopper.step[r] if stopper else None, settings)
                for r, row in enumerate(generated)]

    def _finish(self, ids: list[int], eos_ids: list[int], stop: tuple[str, ...],
                stop_step: int | None, settings: GenerationSettings) -> Generation:
        """Cut one row's generated ids at EOS / the stop string and decode them."""
        if stop_step is not None:
            ids = ids[:stop_step]  # the rest is padding after the stop criterion fired
        eos = set(eos_ids)
        end = next((k for k, t in enumerate(ids) if t in eos), None)
        reason = "length"
        if end is not None:  # after the first EOS come pad ids
            ids, reason = ids[:end + 1], "stop"
        decode = self._decode
        text = decode(ids)
        if stop and _first_stop_end(text, stop) is not None:
            # the fewest tokens whose text holds a stop string (text grows with the prefix)
            lo, hi = 1, len(ids)
            while lo < hi:
                mid = (lo + hi) // 2
                if _first_stop_end(decode(ids[:mid]), stop) is None:
                    lo = mid + 1
                else:
                    hi = mid
            ids, reason = ids[:lo], "stop"
            text = decode(ids)
            text = text[:_first_stop_end(text, stop)]
        elif stop_step is not None:
            reason = "stop"
        return Generation(text, len(ids), reason)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


AUTO_CAP = {"cpu": 256, "cuda": 1024}  # most rows in flight when the batch is chosen (per device)
MEMORY_SHARE = 0.8  # of the free memory given to the rows' caches (the rest: activations)


def _free_memory(device) -> int:
    """Bytes free on ``device`` (CUDA's free memory; the machine's available memory for CPU)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def row_bytes(config, element_size: int, tokens: int) -> int:
    """Memory one row needs at ``tokens`` tokens: its key/value cache over every layer, plus
    its logits (float32) and their sampled copy."""
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return (2 * config.num_hidden_layers * kv * head_dim * element_size * tokens
            + 2 * 4 * config.vocab_size)


def auto_batch_size(model, prompt_tokens: int, max_new_tokens: int) -> int:
    """The most rows that fit on the model's device at ``prompt_tokens + max_new_tokens``
    tokens each (:data:`MEMORY_SHARE` of the free memory), at most :data:`AUTO_CAP`; an
    out-of-memory error halves it as generation goes (:class:`TransformersBackend`)."""
    param = next(model.parameters())
    need = row_bytes(model.config, param.element_size(), prompt_tokens + max_new_tokens)
    fit = int(MEMORY_SHARE * _free_memory(param.device) // max(need, 1))
    return max(1, min(AUTO_CAP.get(param.device.type, AUTO_CAP["cuda"]), fit))


def _warn(text: str) -> None:
    import warnings

    warnings.warn(text, stacklevel=3)


def _first_stop_end(text: str, stop: tuple[str, ...]) -> int | None:
    """End position of the stop string occurrence that ends first in ``text``, or None."""
    ends = [p + len(s) for s in stop if (p := text.find(s)) >= 0]
    return min(ends) if ends else None


def _dtype_kwarg(dtype) -> dict:
    import transformers
    from packaging.version import Version

    # transformers 4.56 renamed from_pretrained's torch_dtype to dtype
    new = Version(transformers.__version__) >= Version("4.56")
    return {"dtype" if new else "torch_dtype": dtype}


# The two hooks below are duck-typed transformers LogitsProcessor / StoppingCriteria (generate only
# calls them), so that importing this module does not import transformers.
class _SeededSampler:
    """Turns greedy decoding into sampling: tempered, top-p filtered logits plus Gumbel noise.

    ``argmax(logits / T + G)`` with ``G ~ Gumbel(0, 1)`` is an exact sample of ``softmax(logits /
    T)``; each row draws its noise from its own generator, so a row's sample does not depend on the
    other rows of the batch.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        self.seeds, self.temperature, self.top_p = seeds, temperature, top_p
        self.generators = None

    def __call__(self, input_ids, scores):  # scores: (rows, vocab)
        import torch

        if self.generators is None:
            self.generators = [torch.Generator(scores.device).manual_seed(s) for s in self.seeds]
        return sampled_scores(scores, self.generators, self.temperature, self.top_p)


def sampled_scores(scores, generators: list, temperature: float, top_p: float):
    """Tempered, top-p filtered ``scores`` plus each row's Gumbel noise from its generator (one
    draw per row and step): their argmax is a sample of each row."""
    import torch

    logits = scores.float() / temperature
    if top_p < 1:
        sorted_logits, idx = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens above it already hold top_p (the top one always stays)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
    noise = torch.stack([torch.empty(logits.shape[-1], device=logits.device)
                         .exponential_(generator=g) for g in generators])
    return logits - noise.log()  # -log(Exp(1)) is Gumbel(0, 1)


class _StopStrings:
    """Marks a row done once its generated text holds a stop string; records the step."""

    def __init__(self, tokenizer, stop: tuple[str, ...], prompt_len: int, eos_ids: list[int]):
        self.tokenizer, self.stop, self.prompt_len = tokenizer, stop, prompt_len
        self.window = max(len(s) for s in stop) + _STOP_WINDOW_MARGIN
        self.eos_ids = eos_ids
        self.step: list[int | None] = []

    def __call__(self, input_ids, scores, **kwargs):  # input_ids: (rows, prompt_len + steps)
        import torch

        gen = input_ids[:, self.prompt_len:]
        if not self.step:
            self.step = [None] * gen.shape[0]
        ended = torch.isin(gen, torch.tensor(self.eos_ids, device=gen.device)).any(dim=1).tolist()
        todo = [r for r, s in enumerate(self.step) if s is None and not ended[r]]
        if todo:
            tails = self.tokenizer.batch_decode(gen[todo, -self.window:].tolist(),
                                                skip_special_tokens=True)
            for r, tail in zip(todo, tails):
                if any(s in tail for s in self.stop):
                    self.step[r] = gen.shape[1]
        return torch.tensor([s is not None for s in self.step], dtype=torch.bool,
                            device=input_ids.device)
