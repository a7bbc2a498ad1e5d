"""The streaming merge engine.

For each output tensor: read the inputs (a block of rows at a time for large tensors), call the
method, hand the result to the writer, drop it. Memory is a few blocks, not the model. What depends
on tensor names and on the checkpoints' layout is resolved here: which stored tensor feeds which
output (tied embeddings), which embedding rows are shared, how a tensor is cut into blocks. What a
method needs per tensor (DARE masks seeded by name, trim thresholds over a whole tensor or the
whole model, calibration statistics) is planned by the method's own ``prepare`` hook; the engine
knows no method's parameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from l2s_kit.errors import IncompatibleModelsError, L2SError, NonFiniteError, RecipeError
from l2s_kit.io import DTYPES, Checkpoint, StateDictSource, TensorInfo
from l2s_kit.io.names import EMBED_SUFFIXES, LM_HEAD
from l2s_kit.merging.recipe import check_device
from l2s_kit.merging.registry import MergeMethod, PerModel, get_method

BLOCK_ELEMS = 1 << 22  # entries per block when a tensor is streamed in blocks of rows (16 MB
# in float32: the heap reuses freed blocks of this size without fragmenting into GBs)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
GLIBC_DEFAULT_THRESHOLD = 128 * 1024


@contextmanager
def reused_heap():
    """While merging, large blocks come from the heap and go back to it when freed.

    glibc serves allocations above its mmap threshold (at most 32 MB) with fresh ``mmap``
    pages and unmaps them on free, so every larger temporary a merge computes (a 64 MB block
    before blocks were cut to 16 MB, a whole matrix of the SVD methods, TIES's planning reads)
    would page-fault all its pages in again: most of an elementwise merge's time. Raising the mmap and trim
    thresholds for the merge lets freed blocks be reused; afterwards both go back to glibc's
    default and the free heap is returned to the system. Elsewhere than glibc: nothing changes.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        yield
        return
    mallopt(M_MMAP_THRESHOLD, 1 << 30)
    mallopt(M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
        mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
        trim(0)


def is_embedding(name: str) -> bool:
    return name == LM_HEAD or name.endswith(EMBED_SUFFIXES)


@dataclass
class TensorJob:
    """How one output tensor is made."""

    out: TensorInfo
    sources: list[str]  # per input (base first): the stored tensor that feeds this output
    shared_rows: int  # rows merged (all of them unless inputs differ in vocabulary rows)
    extra_from: int | None = None  # input that supplies rows [shared_rows, out rows)
    floating: bool = True
    inputs: tuple[int, ...] | None = None  # the inputs read, when not all (a stacked layer: one)
    scale: float = 1.0  # a stacked layer's factor (mergekit passthrough's scale)
    union: object | None = None  # an embedding read in a union vocabulary's order (vocab.Union)

    @property
    def name(self) -> str:
        return self.out.name

    def row_numel(self) -> int:
        n = 1
        for s in self.out.shape[1:]:  # not numel // rows: a tensor may have 0 rows
            n *= s
        return n

    def offset(self, rows: slice | None) -> int:
        """Flat index of the first entry of the block ``rows``."""
        return (rows.start if rows is not None else 0) * self.row_numel()

    def blocks(self, rows_end: int | None = None, rows_start: int = 0,
               whole: bool = False) -> Iterator[slice | None]:
        """Row slices covering [rows_start, rows_end) in blocks of about BLOCK_ELEMS entries
        (one block with ``whole``, for methods that need the whole matrix, such as SVDs)."""
        if not self.out.shape:
            yield None
            return
        end = self.shared_rows if rows_end is None else rows_end
        step = end if whole else max(1, BLOCK_ELEMS // max(1, self.row_numel()))
        for a in range(rows_start, end, step):
            yield slice(a, min(end, a + step))


def _label(src) -> str:
    return str(getattr(src, "path", src))


def _tied(src) -> bool:
    """Whether the input's head is its embedding: it stores no head (whatever its config says:
    nothing else can be its head), or its config ties them (a stored head is then unused, as
    transformers ties it on loading)."""
    return LM_HEAD not in src or src.config.get("tie_word_embeddings") is True


def plan_merge(inputs: Sequence, out_dtype: torch.dtype | None, union=None
               ) -> tuple[list[TensorJob], dict, list[str]]:
    """Check that the inputs fit together and plan every output tensor. ``union``
    (:class:`l2s_kit.merging.vocab.Union`): the embedding and head have its rows, each input's
    read in its order.

    Returns (jobs, config changes for the output, notes for the model card). Raises
    ``IncompatibleModelsError`` naming the tensor, both shapes and both checkpoints.
    """
    base, others = inputs[0], inputs[1:]
    notes: list[str] = []
    _check_architectures(base, others)
    embed = next((n for n in base.names if n.endswith(EMBED_SUFFIXES)), None)
    untied_out = any(not _tied(s) for s in inputs)
    names = _output_names(inputs, embed, untied_out, notes)
    jobs = [_plan_tensor(name, inputs, _sources(inputs, name, embed), out_dtype, notes,
                         union if is_embedding(name) else None) for name in names]
    changes: dict = {}
    if embed is not None:
        changes["tie_word_embeddings"] = not untied_out
        vocab = next((j.out.shape[0] for j in jobs if j.name == embed), None)
        if vocab is not None and (union is not None
                                  or vocab != base.config.get("vocab_size", vocab)):
            changes["vocab_size"] = vocab
    if out_dtype is not None:
        changes["torch_dtype"] = str(out_dtype).removeprefix("torch.")
    return jobs, changes, notes


def _check_architectures(base, others) -> None:
    for m in others:
        for key in ("model_type", "architectures"):
            a, b = base.config.get(key), m.config.get(key)
            if a is not None and b is not None and a != b:
                raise IncompatibleModelsError(
                    f"different architectures: base {_label(base)} has {key} = {a}, but "
                    f"{_label(m)} has {key} = {b}; merging needs models of one architecture."
                )


def _output_names(inputs: Sequence, embed: str | None, untied_out: bool,
                  notes: list[str]) -> list[str]:
    """The output's tensors: the base's, with lm_head.weight added when any input unties it
    and dropped when every input ties it; a tensor only a model has is refused."""
    base, others = inputs[0], inputs[1:]
    for s in inputs:
        if embed is not None and LM_HEAD not in s and s.config.get("tie_word_embeddings") is False:
            notes.append(f"{_label(s)}'s config says tie_word_embeddings = false but it stores no "
                         f"{LM_HEAD}: its {embed} is taken as its head (as if tied)")
    if untied_out and embed is not None:
        tied_inputs = [_label(s) for s in inputs if LM_HEAD not in s]
        if tied_inputs:
            notes.append(
                f"output has an untied {LM_HEAD}; inputs with tied embeddings ("
                + ", ".join(tied_inputs) + f") contribute their {embed} as {LM_HEAD}"
            )
    names = list(base.names)
    if untied_out and embed is not None and LM_HEAD not in base:
        names.append(LM_HEAD)
    if not untied_out and LM_HEAD in names:
        names.remove(LM_HEAD)  # every input ties it: the output does too
        notes.append(f"all inputs tie the head to the embedding; the stored {LM_HEAD} is dropped")
    for m in others:
        extra = [n for n in m.names if n not in names and n != LM_HEAD]
        if extra:
            raise IncompatibleModelsError(
                f"tensor {extra[0]} is in {_label(m)} but not in base {_label(base)} "
                f"({len(extra)} such tensors); the checkpoints are of different architectures."
            )
    return names


def _sources(inputs: Sequence, name: str, embed: str | None) -> list[str]:
    """The tensor each input gives for output tensor ``name`` (a tied input's embedding for
    lm_head.weight); a missing one is refused."""
    base, others = inputs[0], inputs[1:]
    srcs = []
    for s in inputs:
        sn = embed if (name == LM_HEAD and LM_HEAD not in s and embed in s) else name
        if sn not in s:
            raise IncompatibleModelsError(
                f"tensor {name} is missing from {_label(s)} (present in "
                f"{_label(base) if s is not base else _label(others[0])}); "
                "the checkpoints are of different architectures or one is incomplete."
            )
        srcs.append(sn)
    return srcs


def _plan_tensor(name: str, inputs: Sequence, srcs: list[str], out_dtype: torch.dtype | None,
                 notes: list[str], union=None) -> TensorJob:
    """One output tensor: its shape and dtype, and for an embedding whose inputs differ in rows
    (added tokens), the rows merged and the input the extra rows come from (or, in a union
    vocabulary, the union's rows)."""
    base = inputs[0]
    infos = [s.info(sn) for s, sn in zip(inputs, srcs)]
    shapes = [i.shape for i in infos]
    b = infos[0]
    floating = b.dtype.is_floating_point
    shared, extra_from, out_shape = (b.shape[0] if b.shape else 1), None, b.shape
    if union is not None:
        bad = next((i for i, sh in enumerate(shapes) if sh[1:] != b.shape[1:]), None)
        if bad is not None:
            raise IncompatibleModelsError(
                f"tensor {name}: rows of {tuple(b.shape[1:])} in base {_label(base)} but "
                f"{tuple(shapes[bad][1:])} in {_label(inputs[bad])}; the models differ in size")
        out_shape = (union.rows, *b.shape[1:])
        dtype = out_dtype if (out_dtype is not None and floating) else b.dtype
        return TensorJob(TensorInfo(name, dtype, out_shape), srcs, union.rows, None, floating,
                         union=union)
    if any(sh != b.shape for sh in shapes):
        i_bad = next(i for i, sh in enumerate(shapes) if sh != b.shape)
        rows_ok = (is_embedding(name) and all(len(sh) == 2 for sh in shapes)
                   and all(sh[1:] == b.shape[1:] for sh in shapes))
        if not rows_ok:
            raise IncompatibleModelsError(
                f"tensor {name}: shape {tuple(b.shape)} in base {_label(base)} but "
                f"{tuple(shapes[i_bad])} in {_label(inputs[i_bad])}; the models differ in "
                "size or architecture and cannot be merged tensor by tensor."
            )
        rows = [sh[0] for sh in shapes]
        shared, top = min(rows), max(rows)
        extra_from = rows.index(top)
        out_shape = (top, *b.shape[1:])
        notes.append(
            f"{name}: rows 0..{shared - 1} merged; rows {shared}..{top - 1} (present only in "
            f"{_label(inputs[extra_from])}, e.g. added tokens) copied from it"
        )
    if floating and not all(i.dtype.is_floating_point for i in infos):
        raise IncompatibleModelsError(f"tensor {name} is floating point in base but not in "
                                      "every model")
    dtype = out_dtype if (out_dtype is not None and floating) else b.dtype
    return TensorJob(TensorInfo(name, dtype, tuple(out_shape)), srcs, shared, extra_from, floating)


@dataclass(frozen=True)
class Slice:
    """Layers ``[start, end)`` of input ``input`` stacked in the output (mergekit's slice of one
    source, merged by ``passthrough``), each tensor times ``scale`` (a number or a layer
    schedule, whose gradients run over the slice's layers)."""

    input: int
    start: int
    end: int
    scale: float | list = 1.0


def _layer_names(inputs: Sequence) -> list[dict[int, list[str]]]:
    """Per input: its decoder layers' tensor names, by layer index."""
    from l2s_kit.merging.schedule import LAYER

    layer_names = []
    for src in inputs:
        by_layer: dict[int, list[str]] = {}
        for n in src.names:
            m = LAYER.search(n)
            if m is not None:
                by_layer.setdefault(int(m.group(1)), []).append(n)
        layer_names.append(by_layer)
    return layer_names


def _stack_job(inputs: Sequence, out_dtype, out_name: str, i: int, name: str,
               scale: float | list = 1.0) -> TensorJob:
    """The copy of input ``i``'s tensor ``name`` to ``out_name`` (times ``scale``)."""
    info = inputs[i].info(name)
    floating = info.dtype.is_floating_point
    dtype = out_dtype if (out_dtype is not None and floating) else info.dtype
    return TensorJob(TensorInfo(out_name, dtype, tuple(info.shape)), [name],
                     info.shape[0] if info.shape else 1, None, floating, (i,), scale)


def _slice_jobs(k: int, s: Slice, inputs: Sequence, layer_names: list, out_layer: int,
                shapes: dict, out_dtype) -> tuple[list[TensorJob], list]:
    """The jobs of slice ``k`` (its layers renumbered from ``out_layer``) and its layer types;
    ``shapes`` (a layer tensor's shape by its name within the layer) is shared across slices."""
    from l2s_kit.merging.schedule import LAYER, value_at_position

    src = inputs[s.input]
    n_layers = max(layer_names[s.input], default=-1) + 1  # as count_layers, from the scan
    if not 0 <= s.start < s.end <= n_layers:
        raise RecipeError(f"slices[{k}]: layer_range [{s.start}, {s.end}] is not within "
                          f"{_label(src)}'s {n_layers} layers ([0, {n_layers}])")
    types = src.config.get("layer_types")
    jobs, layer_types = [], []
    for offset, layer in enumerate(range(s.start, s.end)):
        t = offset / (s.end - s.start - 1) if s.end - s.start > 1 else 1.0
        for name in layer_names[s.input][layer]:
            m = LAYER.search(name)
            out_name = name[:m.start()] + m.group(0).replace(str(layer), str(out_layer + offset)) \
                + name[m.end():]
            within = name[m.end():]
            shape = tuple(src.info(name).shape)
            if shapes.setdefault(within, shape) != shape:
                raise IncompatibleModelsError(
                    f"slices[{k}]: tensor {name} of {_label(src)} has shape {shape}, but the "
                    f"stack's other layers have {shapes[within]}: layers of models of "
                    "different sizes cannot be stacked")
            scale = (value_at_position(s.scale, out_name, t, 1.0)
                     if isinstance(s.scale, list) else s.scale)
            jobs.append(_stack_job(inputs, out_dtype, out_name, s.input, name, scale))
        if isinstance(types, list) and layer < len(types):
            layer_types.append(types[layer])
    return jobs, layer_types


def plan_stack(inputs: Sequence, slices: Sequence[Slice], out_dtype: torch.dtype | None
               ) -> tuple[list[TensorJob], dict, list[str]]:
    """Plan a layer stack (a "frankenmerge"): the output's decoder layers are the slices' layers
    in order, renumbered from 0; the embedding comes from the first slice's input, the final
    norm and head from the last slice's (mergekit's pre and post weights). Returns (jobs, config
    changes: ``num_hidden_layers`` and the stacked ``layer_types``, notes)."""
    from l2s_kit.merging.schedule import LAYER

    first, last = inputs[slices[0].input], inputs[slices[-1].input]
    _check_architectures(first, [inputs[s.input] for s in slices])
    layer_names = _layer_names(inputs)
    pre = [n for n in first.names if LAYER.search(n) is None and n.endswith(EMBED_SUFFIXES)]
    post = [n for n in last.names if LAYER.search(n) is None and not n.endswith(EMBED_SUFFIXES)]
    jobs = [_stack_job(inputs, out_dtype, n, slices[0].input, n) for n in pre]
    shapes: dict[str, tuple] = {}
    out_layer, layer_types = 0, []
    for k, s in enumerate(slices):
        more, types = _slice_jobs(k, s, inputs, layer_names, out_layer, shapes, out_dtype)
        jobs += more
        layer_types += types
        out_layer += s.end - s.start
    jobs += [_stack_job(inputs, out_dtype, n, slices[-1].input, n) for n in post]
    changes: dict = {"num_hidden_layers": out_layer}
    if layer_types and len(layer_types) == out_layer:
        changes["layer_types"] = layer_types
    if out_dtype is not None:
        changes["torch_dtype"] = str(out_dtype).removeprefix("torch.")
    if any(n.endswith(EMBED_SUFFIXES) for n in pre):
        changes["tie_word_embeddings"] = LM_HEAD not in post
    notes: list[str] = []
    if first is not last:
        notes.append(f"the embedding from {_label(first)} (the first slice's model), the final "
                     f"norm{' and ' + LM_HEAD if LM_HEAD in post else ''} from {_label(last)} "
                     "(the last slice's), as mergekit stacks them")
    notes.append("stacked " + " + ".join(
        f"layers {s.start}..{s.end - 1} of {_label(inputs[s.input])}" for s in slices)
        + f": {out_layer} layers")
    return jobs, changes, notes


def _where(rows: slice | None) -> str:
    return f" (rows {rows.start}..{rows.stop - 1})" if rows is not None else ""


def _check_finite(t: torch.Tensor, what: str, name: str, where: str) -> None:
    # A sum is non-finite when some entry is (NaN and Inf propagate), and is ten times cheaper
    # than torch.isfinite over the tensor; only then are the entries counted (a sum that merely
    # overflowed finds none).
    if not t.dtype.is_floating_point or bool(torch.isfinite(t.sum())):
        return
    bad = int((~torch.isfinite(t)).sum())
    if bad == 0:
        return
    raise NonFiniteError(
        f"{what} tensor {name} has {bad} non-finite values (NaN/Inf){where}; "
        + ("the input checkpoint is corrupt or was saved after a diverged run."
           if what != "merged" else
           "the merged values overflow the output dtype: use out_dtype float32/bfloat16 or a "
           "smaller alpha.")
    )


class MergeRun:
    """One merge: the inputs (base first), the planned output tensors, the method with its
    parameters, and the per-tensor state its ``prepare`` hook planned. This is also what a hook
    sees: ``inputs``, ``jobs``, ``weights``, ``n`` (models merged), ``device``, ``compute``,
    ``progress``, ``read`` / ``delta`` for any block of any input, and ``notes``, where a hook
    puts what the model card should say (say, the per-layer coefficients it computed)."""

    def __init__(self, inputs: Sequence, method: MergeMethod, params: dict, weights: list[float],
                 compute: torch.dtype, device: str, jobs: list[TensorJob], progress: bool):
        self.inputs, self.weights, self.n = inputs, weights, len(inputs) - 1
        # a tensor of no entries has nothing to merge: written as it is, never seen by a method
        self.all_jobs, self.jobs = jobs, [j for j in jobs if j.out.numel]
        self.compute, self.device, self.progress = compute, device, progress
        self.notes: list[str] = []  # what the hooks found that the model card should say
        # A wrapping method (AIM) runs its inner merge as the method, then itself on the result.
        self.outer, self.outer_params = None, {}
        if method.wraps:
            self.outer = method
            method, params, self.outer_params = method.split(params)
        self.method, self.params = method, params
        from l2s_kit.merging.schedule import count_layers, unmatched_filters

        self.n_layers = count_layers(j.name for j in jobs)
        scheduled = {f"models[{i}].parameters.weight": w for i, w in enumerate(weights) if isinstance(w, list)}
        scheduled.update({f"models[{i}].parameters.{k}": x for k, v in {**params, **self.outer_params}.items()
                          if isinstance(v, PerModel) for i, x in enumerate(v)})
        for name, f in unmatched_filters({**params, **self.outer_params, **scheduled},
                                         (j.name for j in jobs)):
            where = name if name.startswith("models[") else f"parameters.{name}"
            raise RecipeError(f"{where}: the filter {f!r} occurs in no tensor name of "
                              "the merge, so it would change nothing; use a part of a tensor "
                              "name such as self_attn, mlp or layers.0.")
        self.state = method.prepare(self, params) if method.prepare is not None else None
        self.outer_state = (self.outer.prepare(self, self.outer_params)
                            if self.outer is not None and self.outer.prepare is not None else None)

    def params_at(self, job: TensorJob, params: dict | None = None) -> dict:
        """``params`` (default: the method's) with every layer schedule replaced by its value
        for tensor ``job`` (see :mod:`l2s_kit.merging.schedule`)."""
        from l2s_kit.merging.schedule import is_schedule, value_at

        params = self.params if params is None else params
        if not any(is_schedule(v) or isinstance(v, PerModel) for v in params.values()):
            return params
        method = self.method if params is self.params else self.outer
        defaults = {k: p.default for k, p in method.params.items()} if method else {}

        def value(k, v):
            return value_at(v, job.name, self.n_layers, defaults.get(k)) if is_schedule(v) else v
        return {k: PerModel(value(k, x) for x in v) if isinstance(v, PerModel) else value(k, v)
                for k, v in params.items()}

    def weights_at(self, job: TensorJob) -> list[float]:
        """The models' weights for tensor ``job``: a weight given as a layer schedule (mergekit's
        per-model gradient, ``weight: [0.2, 0.9]``) takes its value there."""
        from l2s_kit.merging.schedule import value_at

        return [value_at(w, job.name, self.n_layers, 1.0) if isinstance(w, list) else w
                for w in self.weights]

    def read(self, job: TensorJob, i: int, rows: slice | None) -> torch.Tensor:
        """Input i's block ``rows`` of tensor ``job`` (in the compute dtype, on the device); i
        counts the inputs the job reads (all, or the one a stacked layer comes from)."""
        if job.union is not None:
            return self._union_rows(job, i, rows)
        src = self.inputs[job.inputs[i] if job.inputs is not None else i]
        t = src.read(job.sources[i], rows).to(self.device, self.compute)
        _check_finite(t, "input", f"{job.sources[i]} of {_label(src)}", _where(rows))
        return t

    def _union_rows(self, job: TensorJob, i: int, rows: slice | None) -> torch.Tensor:
        """Input i's rows of the union vocabulary's block ``rows``: its own row of each token it
        has, the union's fallback (another input's row, or their mean) of each it lacks."""
        from l2s_kit.merging.vocab import read_rows

        u = job.union
        a, b = (rows.start, rows.stop) if rows is not None else (0, u.rows)

        def stored(j: int, idx: torch.Tensor) -> torch.Tensor:
            src, name = self.inputs[j], job.sources[j]
            t = read_rows(lambda r: src.read(name, r), idx).to(self.device, self.compute)
            _check_finite(t, "input", f"{name} of {_label(src)}", _where(rows))
            return t

        own = u.own[i][a:b]
        out = torch.zeros((b - a, *job.out.shape[1:]), dtype=self.compute, device=self.device)
        have = (own >= 0).nonzero().squeeze(1)
        if len(have):
            out[have.to(self.device)] = stored(i, own[have])
        for t in (own < 0).nonzero().squeeze(1).tolist():
            sources = u.fallback.get(a + t, [])
            for j, r in sources:  # summed, then divided, as mergekit does
                out[t] += stored(j, torch.tensor([r]))[0]
            if len(sources) > 1:
                out[t] /= len(sources)
        return out

    def delta(self, job: TensorJob, i: int, rows: slice | None) -> torch.Tensor:
        """Task vector of model i (0-based among the models) on one block."""
        return self.read(job, i + 1, rows) - self.read(job, 0, rows)

    def run(self, sink) -> None:
        """Merge every planned tensor into ``sink(name, block)``, in order. The inputs of the
        next block are read on a second thread while this one is computed (reading and the
        conversion to the compute dtype release the GIL), so reading overlaps the arithmetic;
        the writer hashes and writes on a third."""
        from concurrent.futures import ThreadPoolExecutor

        total = sum(j.out.nbytes for j in self.jobs)
        name = (self.outer or self.method).name
        steps = list(self._steps())
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"merge ({name})",
                  disable=not self.progress) as bar, ThreadPoolExecutor(1) as pool:
            ahead = pool.submit(self._load, *steps[0]) if steps else None
            job_state = None
            for k, (kind, job, rows) in enumerate(steps):
                data = ahead.result()
                ahead = pool.submit(self._load, *steps[k + 1]) if k + 1 < len(steps) else None
                if kind in ("copy", "empty"):
                    sink(job.name, data)
                elif kind == "extra":
                    sink(job.name, data.to(job.out.dtype).cpu())
                else:
                    if job_state is None or job_state[0] is not job:
                        job_state = (job, self._job_state(job))
                    self._merge_block(job, rows, *data, *job_state[1], sink)
                if k + 1 == len(steps) or steps[k + 1][1] is not job:
                    bar.update(job.out.nbytes)

    def _steps(self):
        """(kind, job, rows) in write order: "copy" a non-floating tensor, "merge" a block,
        "extra" a block of rows only one input has, "empty" a tensor of no entries."""
        for job in self.all_jobs:
            if not job.out.numel:
                yield "empty", job, None
                continue
            if not job.floating:
                yield "copy", job, None
                continue
            for rows in job.blocks(whole=not self.method.elementwise):
                yield "merge", job, rows
            if job.extra_from is not None:
                for rows in job.blocks(job.out.shape[0], job.shared_rows):
                    yield "extra", job, rows

    def _load(self, kind: str, job: TensorJob, rows):
        if kind == "empty":
            return torch.empty(job.out.shape, dtype=job.out.dtype, device="cpu")  # as read
        if kind == "copy":
            return self.inputs[job.inputs[0] if job.inputs is not None else 0].read(job.sources[0])
        if kind == "extra":
            return self.read(job, job.extra_from, rows)
        return self.read(job, 0, rows), [self.read(job, i, rows)
                                         for i in range(1, len(job.sources))]

    def _job_state(self, job: TensorJob) -> tuple:
        """What every block of ``job`` needs: the hooks' per-block state and the parameters'
        values for this tensor (layer schedules)."""
        return (self.state(job) if self.state is not None else None,
                self.outer_state(job) if self.outer_state is not None else None,
                self.params_at(job),
                self.params_at(job, self.outer_params) if self.outer is not None else {},
                self.weights_at(job))

    def _merge_block(self, job, rows, base, models, block_state, outer_state, params,
                     outer_params, weights, sink) -> None:
        kw = block_state(rows) if block_state is not None else {}
        merged = self.method.fn(base, models, weights, **params, **kw)
        if self.outer is not None:
            kw = outer_state(rows) if outer_state is not None else {}
            merged = self.outer.fn(base, models, weights, **outer_params,
                                   merged=merged, **kw)
        out = merged.to(job.out.dtype).cpu()
        _check_finite(out, "merged", job.name, _where(rows))
        sink(job.name, out)


def as_sources(paths_or_dicts) -> list:
    out = []
    for s in paths_or_dicts:
        if isinstance(s, (str, Path)):
            out.append(Checkpoint(s))
        elif isinstance(s, torch.nn.Module):
            cfg = getattr(getattr(s, "config", None), "to_dict", dict)()
            out.append(StateDictSource(s.state_dict(), cfg, type(s).__name__))
        elif isinstance(s, dict):
            out.append(StateDictSource(s))
        else:
            out.append(s)
    return out


def resolve_device(device: str) -> str:
    """``device`` checked ('cpu', 'cuda', 'cuda:N') and available."""
    device = check_device(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise L2SError(f"device {device} was asked for, but torch sees no CUDA device "
                       f"(torch {torch.__version__}); use device: cpu or install a CUDA build.")
    return device


def run_merge(inputs: Sequence, method: MergeMethod | str, params: dict, weights: list[float],
              jobs: list[TensorJob], sink, *, compute_dtype: str = "float32",
              device: str = "cpu", progress: bool = True) -> list[str]:
    """Merge ``inputs`` (base first) as ``jobs`` (from ``plan_merge``) says, into
    ``sink(name, block)``. A method with a ``prepare`` hook first plans its per-tensor state
    (trim thresholds, DARE masks, calibration statistics cached next to the checkpoints).
    Returns the hooks' notes for the model card."""
    method = get_method(method) if isinstance(method, str) else method
    with reused_heap():  # the hooks' planning passes allocate blocks too
        run = MergeRun(inputs, method, params, list(weights), DTYPES[compute_dtype],
                       resolve_device(device), jobs, progress)
        run.run(sink)
    return run.notes


def merge_state_dicts(method: str, base, models: Sequence, weights: Sequence[float] | None = None,
                      *, out_dtype: str | None = None, device: str = "cpu", progress: bool = False,
                      **params) -> dict[str, torch.Tensor]:
    """Merge small models in memory. ``base``/``models``: state dicts, ``nn.Module``s or folders.

    >>> sd = merge_state_dicts("ties", s1_model, [s2_model], k=0.8, alpha=1.0)
    >>> s1_model.load_state_dict(sd)
    """
    m = get_method(method)
    where = f"merge_state_dicts({method!r})"
    m.check_models(len(models), where)
    # a parameter given per model (PerModel): each model's value checked, the rest resolved
    per_model = {k: v for k, v in params.items() if isinstance(v, PerModel)}
    resolved = m.resolve({k: v for k, v in params.items() if k not in per_model}, where)
    for k, v in per_model.items():
        if k not in m.per_model_of(resolved) or len(v) != len(models):
            raise RecipeError(f"{where}: {k} is given per model; {m.name} takes per-model values "
                              f"of {', '.join(m.per_model_of(resolved)) or 'no parameter'}, one "
                              f"per model ({len(models)})")
        resolved[k] = PerModel(m.check_model_value(resolved, k, x, where) for x in v)
    if per_model:
        m.check_resolved(resolved, where)
    inputs = as_sources([base, *models])
    weights = list(weights) if weights is not None else [1.0] * len(models)
    blocks: dict[str, list[torch.Tensor]] = {}
    jobs, _, _ = plan_merge(inputs, DTYPES[out_dtype] if out_dtype else None)
    run_merge(inputs, m, resolved, weights, jobs, lambda n, t: blocks.setdefault(n, []).append(t),
              device=device, progress=progress)
    return {n: (b[0] if len(b) == 1 else torch.cat(b)) for n, b in blocks.items()}
