"""Activation statistics of a checkpoint over a calibration set, one decoder layer at a time.

``activation_stats(ckpt, spec)`` returns, for every linear and norm module of the model except the
embeddings and the output head, ``a_c`` = Σ over calibration samples of (mean over the sample's
tokens of |x_c|), where x (tokens × C) is the module's input and c its input channel: a float64
tensor of shape (C,) per module name (``model.layers.3.mlp.down_proj``, ``model.norm``; the tensor
it scales is that name + ``.weight``). Each sample counts as one batch of the AIM reference code
(mean over its tokens, summed over samples), so the result does not depend on the batch size;
padding tokens are left out.

Layer by layer (the default): the calibration tokens are embedded (only their rows of the
embedding matrix are read), then each decoder layer's tensors are read from the checkpoint into a
transformers decoder layer built from the config (rotary position embeddings, the model's own
causal mask with padding), the hidden states of every sample pass through it with hooks on its
modules, and the layer is dropped: memory is one layer plus the hidden states (samples × tokens ×
hidden floats), never the whole model. ``layerwise=False`` runs the whole model with the same
hooks (the reference the tests compare against). Qwen2 / Llama-style decoders (``model.layers``,
``model.norm``, ``model.rotary_emb``) are supported.

Results are cached next to the checkpoint (:mod:`l2s_kit.merging.calibration.cache`), keyed by the checkpoint's
fingerprint and the calibration settings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from l2s_kit.errors import CheckpointError
from l2s_kit.io import Checkpoint
from l2s_kit.io.names import EMBED, EMBED_MODULE, HEAD, LAYERS, NORM, layer
from l2s_kit.merging.calibration.cache import cached_tensors
from l2s_kit.merging.calibration.sets import CalibrationSpec, texts

BLOCK_ELEMS = 1 << 24
ATTENTION = "sdpa"


def tokenize(path: str | os.PathLike, docs: Sequence[str], max_tokens: int,
             batch_size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(ids, mask) batches of ``docs`` under the checkpoint's tokenizer, right-padded, each text cut
    to ``max_tokens`` tokens: shapes (B, T) int64 and (B, T) bool."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "right"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    out = []
    for a in range(0, len(docs), batch_size):
        enc = tok(list(docs[a: a + batch_size]), return_tensors="pt", padding=True,
                  truncation=True, max_length=max_tokens)
        out.append((enc["input_ids"], enc["attention_mask"].bool()))
    return out


class Recorder:
    """Forward pre-hooks that sum per-sample token means of |input| per input channel."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.mask: torch.Tensor | None = None  # (B, T) bool: the current batch's real tokens
        self.handles = []

    def _hook(self, name: str):
        def fn(module, args):
            x = args[0].detach().float().abs()  # (B, T, C)
            m = self.mask.to(x.dtype)
            per_sample = (x * m[..., None]).sum(1) / m.sum(1, keepdim=True)  # (B, C)
            s = per_sample.sum(0).double().cpu()
            self.sums[name] = self.sums[name] + s if name in self.sums else s
        return fn

    def attach(self, module: torch.nn.Module, prefix: str = "") -> None:
        """Hook every linear and norm module under ``module`` (named ``prefix`` + its path),
        except the output head."""
        for n, mod in module.named_modules():
            full = ".".join(p for p in (prefix, n) if p)
            if full == HEAD or full.endswith(f".{HEAD}"):
                continue
            if isinstance(mod, torch.nn.Linear) or type(mod).__name__.endswith(("RMSNorm",
                                                                                 "LayerNorm")):
                self.handles.append(mod.register_forward_pre_hook(self._hook(full)))

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _config(path):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(path))
    cfg._attn_implementation = ATTENTION
    return cfg


def stats_whole_model(path, batches, progress: bool = False) -> dict[str, torch.Tensor]:
    """The reference: the whole model in memory (float32), hooks on every module."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32,
                                                 attn_implementation=ATTENTION).eval()
    rec = Recorder()
    rec.attach(model)
    with torch.no_grad():
        for ids, mask in tqdm(batches, desc="activations (whole model)", disable=not progress):
            rec.mask = mask
            model(input_ids=ids, attention_mask=mask.long())
    rec.detach()
    return rec.sums


def _embed(ckpt: Checkpoint, batches) -> list[torch.Tensor]:
    """Embeddings of the batches' tokens, reading only the needed rows (in blocks)."""
    if EMBED not in ckpt:
        raise CheckpointError(f"{ckpt.path} has no {EMBED}; layer-by-layer activation statistics "
                              f"need a Qwen2/Llama-style decoder ({EMBED_MODULE}, {LAYERS})")
    vocab, hidden = ckpt.info(EMBED).shape
    ids = torch.cat([b[0].flatten() for b in batches])
    uniq = torch.unique(ids)
    table = torch.empty(len(uniq), hidden)
    step = max(1, BLOCK_ELEMS // hidden)
    for a in range(0, vocab, step):
        sel = ((uniq >= a) & (uniq < a + step)).nonzero().flatten()
        if len(sel):
            block = ckpt.read(EMBED, slice(a, min(vocab, a + step)))
            table[sel] = block[uniq[sel] - a].float()
    return [table[torch.searchsorted(uniq, b[0])] for b in batches]


def _release_memory() -> None:
    """Give freed heap memory back to the OS (glibc keeps the freed layers' pages otherwise, and
    the resident memory grows by one layer per layer)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _load(module: torch.nn.Module, ckpt: Checkpoint, prefix: str) -> None:
    names = [n for n in ckpt.names if n.startswith(prefix + ".")]
    sd = {n[len(prefix) + 1:]: ckpt.read(n).float() for n in names}
    module.load_state_dict(sd, strict=True, assign=True)


def causal_masks(config, h: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> dict:
    """The model's own attention masks for one batch, by layer type (full, sliding)."""
    import inspect

    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    cache = "cache" if "cache" in inspect.signature(create_causal_mask).parameters \
        else "past_key_values"  # renamed in transformers 5.x
    kw = {"config": config, "inputs_embeds": h, "attention_mask": mask.long(),
          "position_ids": pos, cache: None}
    masks = {"full_attention": create_causal_mask(**kw)}
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        masks["sliding_attention"] = create_sliding_window_causal_mask(**kw)
    return masks


class Decoder:
    """A checkpoint's Qwen2/Llama-style decoder built on the meta device, whose parts are read
    one at a time: :meth:`layer` loads decoder layer i (float32, on ``device``), :meth:`drop`
    gives its memory back, :meth:`norm` loads the final norm; :meth:`context` is what a layer
    needs for one batch (the model's own causal masks with padding, rotary position embeddings,
    position ids) and :meth:`run` passes hidden states through layer i. The layer-by-layer
    statistics (:class:`LayerStream`) and sensitivities
    (:func:`~l2s_kit.merging.calibration.sensitivity.sensitivities_layerwise`) both stand on it."""

    def __init__(self, path, device: str = "cpu"):
        from transformers import AutoModelForCausalLM

        self.path, self.ckpt, self.device = path, Checkpoint(path), device
        with torch.device("meta"):
            skel = AutoModelForCausalLM.from_config(_config(path))
        self.inner = getattr(skel, "model", None)
        if self.inner is None or not all(hasattr(self.inner, a)
                                         for a in ("layers", "norm", "rotary_emb")):
            raise CheckpointError(f"{path}: layer-by-layer statistics support Qwen2/Llama-style "
                                  f"decoders; {type(skel).__name__} is not one")
        self.config = skel.config
        self.rotary = type(self.inner.rotary_emb)(config=self.config).to(device)  # real buffers
        self.n_layers = self.config.num_hidden_layers
        self.types = getattr(self.config, "layer_types", None) or ["full_attention"] * self.n_layers
        self.padding_idx = getattr(self.inner.embed_tokens, "padding_idx", None)

    def context(self, h: torch.Tensor, mask: torch.Tensor) -> tuple:
        """(masks by layer type, position embeddings, position ids) of one batch."""
        pos = torch.arange(h.shape[1], device=self.device).unsqueeze(0)
        return causal_masks(self.config, h, mask, pos), self.rotary(h, pos), pos

    def layer(self, i: int) -> torch.nn.Module:
        mod = self.inner.layers[i]
        _load(mod, self.ckpt, layer(i))
        return mod.to(self.device)

    def run(self, mod: torch.nn.Module, i: int, h: torch.Tensor, ctx: tuple) -> torch.Tensor:
        """Hidden states ``h`` through decoder layer ``mod`` (layer ``i``) with a batch's ``ctx``."""
        masks, pe, pos = ctx
        out = mod(h, attention_mask=masks[self.types[i]], position_embeddings=pe,
                  position_ids=pos)
        return out[0] if isinstance(out, tuple) else out

    def drop(self, i: int) -> None:
        """Layer i's weights given back (the module returns to the meta device)."""
        self.inner.layers[i] = self.inner.layers[i].to("meta")
        _release_memory()

    def norm(self) -> torch.nn.Module:
        _load(self.inner.norm, self.ckpt, NORM)
        return self.inner.norm.to(self.device)


class LayerStream:
    """One checkpoint's hidden states over calibration batches, advanced one decoder layer at a
    time (:class:`Decoder`): each layer is read, every batch's hidden states pass through it, and
    the layer is dropped. ``hidden`` holds the states after the last layer run (the embeddings at
    first), one (B, T, H) tensor per batch, on ``device``."""

    def __init__(self, path, batches, device: str = "cpu"):
        self.decoder = Decoder(path, device)
        self.path, self.ckpt, self.device = path, self.decoder.ckpt, device
        self.hidden = [h.to(device) for h in _embed(self.ckpt, batches)]
        self.masks = [mask.to(device) for _ids, mask in batches]
        self.ctx = [self.decoder.context(h, mask) for mask, h in zip(self.masks, self.hidden)]
        self.n_layers = self.decoder.n_layers

    def layer(self, i: int, rec: Recorder | None = None) -> None:
        """Run decoder layer i over every batch (``rec``: hooks on its modules meanwhile)."""
        mod = self.decoder.layer(i)
        if rec is not None:
            rec.attach(mod, layer(i))
        for b, ctx in enumerate(self.ctx):
            if rec is not None:
                rec.mask = self.masks[b]
            self.hidden[b] = self.decoder.run(mod, i, self.hidden[b], ctx)
        if rec is not None:
            rec.detach()
        del mod
        self.decoder.drop(i)

    def normed(self, rec: Recorder | None = None) -> list[torch.Tensor]:
        """The final norm of every batch's hidden states (``rec``: hooked on the norm)."""
        norm = self.decoder.norm()
        if rec is not None:
            rec.attach(norm, NORM)
        out = []
        for mask, h in zip(self.masks, self.hidden):
            if rec is not None:
                rec.mask = mask
            out.append(norm(h))
        if rec is not None:
            rec.detach()
        return out


def stats_layerwise(path, batches, progress: bool = False,
                    device: str = "cpu") -> dict[str, torch.Tensor]:
    """Layer-by-layer statistics (see the module docstring); equal to ``stats_whole_model``.
    On ``device`` (say ``cuda``) the layer and the hidden states live there; the sums come back
    to the CPU in float64."""
    rec = Recorder()
    with torch.no_grad():
        stream = LayerStream(path, batches, device)
        for i in tqdm(range(stream.n_layers), desc="activations (layer by layer)",
                      disable=not progress):
            stream.layer(i, rec)
        stream.normed(rec)
    return rec.sums


def activation_stats(path: str | os.PathLike, spec: CalibrationSpec, *, layerwise: bool = True,
                     batch_size: int = 8, cache: bool = True, progress: bool = False,
                     device: str = "cpu") -> dict[str, torch.Tensor]:
    """Per module name: ``a`` (float64, shape (C,)) of ``path``'s model over ``spec``'s texts.

    Cached next to the checkpoint (``cache=False`` recomputes and stores nothing); the cache key
    is the checkpoint's fingerprint and ``spec`` (with a content hash of a file source), so
    another calibration set or another checkpoint never reuses a stale result.
    """
    def compute():
        batches = tokenize(path, texts(spec), spec.max_tokens, batch_size)
        if layerwise:
            return stats_layerwise(path, batches, progress, device=device)
        return stats_whole_model(path, batches, progress)

    if not cache:
        return compute()
    return cached_tensors("activations", [path], spec.key(), compute)
