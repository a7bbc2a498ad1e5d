"""Continuous batching for the transformers backend: no row waits for the longest.

A static batch decodes until its longest response ends, while reasoning responses range from
hundreds to many thousands of tokens: most rows sit finished while a few decode. Here a row that
ends leaves the batch and a waiting prompt takes its place:

- the live rows share one key/value cache, left-padded to a common length (an attention mask
  says which columns are real; each row has its own position ids);
- when enough rows have ended (a quarter of the batch, or all of them), the finished rows are
  dropped from the cache and waiting prompts are prefilled together and joined to it (both
  left-padded to the longer one); columns no live row uses any more are trimmed;
- each step feeds every live row its last token; the next token is the argmax of the logits
  (greedy) or of the tempered logits plus the row's own seeded Gumbel noise (sampling), so a
  row's output does not depend on which rows share its batch: the same outputs as a static
  batch, in fewer steps.

Models whose cache is not a plain per-layer key/value cache (sliding-window or recurrent layers)
are decoded in static batches instead (:func:`supports_refill`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

REFILL_SHARE = 0.25  # refill when this share of the batch has ended (or the batch is empty)
# what a device raises when a batch does not fit (torch < 2.5: only CUDA's)
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def supports_refill(cache) -> bool:
    """Whether ``cache`` (a model's cache after a prefill) is a plain per-layer key/value cache
    whose rows can be selected, padded and joined."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer"
                                and getattr(layer, "keys", None) is not None for layer in layers)


class RefillUnsupported(Exception):
    """The model's cache cannot be refilled: decode in static batches instead."""


@dataclass
class _Batch:
    rows: list[int]             # the row (index into the texts) of each batch slot
    cache: object               # the model's cache, batch dimension = slots
    mask: torch.Tensor          # (slots, columns): 1 where a column is a real token of the row
    pos: torch.Tensor           # (slots,): the position id of the next token fed
    last: torch.Tensor          # (slots,): the token fed next


def _pad_left(t: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
    missing = columns - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _select(b: _Batch, slots: list[int]) -> _Batch:
    idx = torch.tensor(slots, device=b.mask.device, dtype=torch.long)
    for layer in b.cache.layers:
        layer.keys, layer.values = layer.keys[idx], layer.values[idx]
    return _Batch([b.rows[s] for s in slots], b.cache, b.mask[idx], b.pos[idx], b.last[idx])


def _join(a: _Batch | None, b: _Batch) -> _Batch:
    """``a``'s slots then ``b``'s, left-padded to the longer cache; unused columns trimmed."""
    if a is not None and a.rows:
        columns = max(a.mask.shape[1], b.mask.shape[1])
        for la, lb in zip(a.cache.layers, b.cache.layers):
            la.keys = torch.cat([_pad_left(la.keys, columns, 2), _pad_left(lb.keys, columns, 2)])
            la.values = torch.cat([_pad_left(la.values, columns, 2),
                                   _pad_left(lb.values, columns, 2)])
        b = _Batch(a.rows + b.rows, a.cache,
                   torch.cat([_pad_left(a.mask, columns, 1), _pad_left(b.mask, columns, 1)]),
                   torch.cat([a.pos, b.pos]), torch.cat([a.last, b.last]))
    used = (b.mask.sum(0) > 0).nonzero()
    first = int(used.min()) if len(used) else 0
    if first:
        for layer in b.cache.layers:
            layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
        b.mask = b.mask[:, first:]
    return b


class RefillDecoder:
    """Decode rows (prompt texts) with at most ``slots`` in flight; see the module docstring.
    ``choose(logits, rows)`` picks each slot's next token (its row given, for its own seed);
    ``done(row, ids)`` says whether a row has ended with its newest token (called once per
    token). :meth:`run` returns each row's generated ids."""

    def __init__(self, model, tokenizer, slots: int, choose, done, progress=None, reset=None,
                 warn=None):
        import inspect

        self.model, self.tokenizer, self.slots = model, tokenizer, slots
        params = inspect.signature(model.forward).parameters
        # a prefill needs the last position's logits only (transformers >= 4.45)
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.choose, self.done, self.progress = choose, done, progress
        self.reset = reset or (lambda row: None)  # a row starts again (its sampler re-seeded)
        self.warn = warn or (lambda text: None)
        self.steps = 0  # forward passes over the live batch (prefills not counted)
        # transformers >= 5.25 names the cache argument ``cache``, earlier ``past_key_values``
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def _forward(self, cache=None, **kw):
        if cache is not None:
            kw[self._cache_arg] = cache
        res = self.model(**kw, use_cache=True, return_dict=True)
        return res.logits, (res["cache"] if "cache" in res else res["past_key_values"])

    def _append(self, rows: list[int], tokens: torch.Tensor) -> None:
        for r, t in zip(rows, tokens.tolist()):
            if not self.ended[r]:
                self.out[r].append(t)
                self.ended[r] = self.done(r, self.out[r])
                if self.ended[r] and self.progress is not None:
                    self.progress.update(1)

    def _prefill(self, rows: list[int]) -> _Batch:
        device = next(self.model.parameters()).device
        enc = self.tokenizer([self.texts[r] for r in rows], return_tensors="pt",
                             padding=True).to(device)
        mask = enc["attention_mask"].long()
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        logits, cache = self._forward(input_ids=enc["input_ids"], attention_mask=mask,
                                      position_ids=pos, **self._last_only)
        if not supports_refill(cache):
            raise RefillUnsupported(type(cache).__name__)
        first = self.choose(logits[:, -1, :].float(), rows)
        self._append(rows, first)
        return _Batch(list(rows), cache, mask, mask.sum(-1), first)

    def _step(self, b: _Batch) -> None:
        mask = torch.cat([b.mask, b.mask.new_ones((b.mask.shape[0], 1))], dim=1)
        logits, cache = self._forward(input_ids=b.last[:, None], attention_mask=mask,
                                      position_ids=b.pos[:, None], cache=b.cache)
        tokens = self.choose(logits[:, -1, :].float(), b.rows)
        self._append(b.rows, tokens)
        b.cache, b.mask, b.pos, b.last = cache, mask, b.pos + 1, tokens
        self.steps += 1

    def _back_off(self, rows: list[int], waiting: deque) -> None:
        """Out of memory: the rows in flight start again, later, in a batch half as large
        (raised again when one row alone does not fit)."""
        if self.slots == 1:
            raise
        self.warn(f"out of memory with {self.slots} rows in flight: going on with "
                  f"{self.slots // 2} (set the batch size by hand to skip this)")
        self.slots //= 2
        for r in reversed(rows):
            if not self.ended[r]:
                self.out[r] = []
                self.reset(r)
                waiting.appendleft(r)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def run(self, texts: list[str], order: list[int]) -> list[list[int]]:
        self.texts, self.out = texts, [[] for _ in texts]
        self.ended = [False] * len(texts)
        waiting = deque(order)
        batch: _Batch | None = None
        with torch.inference_mode():
            while waiting or batch is not None:
                try:
                    batch = self._advance(batch, waiting)
                except OUT_OF_MEMORY:
                    rows = list(batch.rows) if batch is not None else []
                    rows += [r for r in self._prefilling if r not in rows]
                    batch = None
                    self._back_off(rows, waiting)
        return self.out

    def _advance(self, batch: _Batch | None, waiting: deque) -> _Batch | None:
        """One refill, compaction or decoding step; the batch after it (None: nothing in
        flight)."""
        self._prefilling = []
        live = [s for s, r in enumerate(batch.rows) if not self.ended[r]] if batch else []
        free = self.slots - len(live)
        if waiting and (not live or free >= max(1, int(REFILL_SHARE * self.slots))):
            self._prefilling = [waiting.popleft() for _ in range(min(free, len(waiting)))]
            kept = _select(batch, live) if live else None
            return _join(kept, self._prefill(self._prefilling))
        if not live:
            return None
        if len(batch.rows) - len(live) >= max(1, int(REFILL_SHARE * len(batch.rows))):
            batch = _join(None, _select(batch, live))  # the tail: fewer rows per step
        self._step(batch)
        return batch
