"""A recipe merged: into a folder (streamed, complete or not at all), once per recipe and inputs,
or into memory; the merged folder's config and its record (``l2s_merge.json``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch

from l2s_kit.errors import CheckpointError, RecipeError
from l2s_kit.io import (
    DTYPES,
    VOCABULARY_FILES,
    Checkpoint,
    CheckpointWriter,
    check_apart,
    check_out,
    copy_side_files,
)
from l2s_kit.merging.card import model_card
from l2s_kit.merging.engine import Slice, merge_state_dicts, plan_merge, plan_stack, run_merge
from l2s_kit.merging.recipe import UNION, Recipe, load_recipe, parse_size
from l2s_kit.version import __version__

MERGE_INFO = "l2s_merge.json"


class MergeResult(type(Path())):  # a Path with the merge's hashes attached
    """The output folder (a ``pathlib.Path``), with ``weights_hash`` and ``recipe_hash``."""

    weights_hash: str = ""
    recipe_hash: str = ""
    notes: list[str] = []  # what the merge found (tokenizer, tied embeddings, extra rows, ...)


def _recipe(recipe) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


def _refuse_blocked(notes: list[str], force: bool) -> None:
    """What ``l2s check`` says blocks the merge refuses it, unless forced."""
    from l2s_kit.merging.compat import BLOCKS

    blocks = [n for n in notes if n.startswith(f"check ({BLOCKS})")]
    if blocks and not force:
        raise RecipeError("l2s check finds what blocks this merge: " + "; ".join(blocks)
                          + ". Fix the pair, or merge anyway with force=True (--force); the card "
                          "then records it")


def _template(r: Recipe, tok_dir: Path, notes: list[str]) -> str | None:
    """The chat template the recipe asks for (None: the tokenizer's own), noted."""
    if r.chat_template is None:
        return None
    from l2s_kit.merging.compat import pick_chat_template

    template, how = pick_chat_template(
        r.chat_template, [r.base_model, *(m.model for m in r.models)], tok_dir)
    notes.append(how)
    return template


def _write_side_files(writer, r: Recipe, inputs: list, union, tok_dir: Path,
                      template: str | None, notes: list[str]) -> None:
    """Tokenizer files, the model card, the recipe as run and l2s_merge.json."""
    tok_files = copy_side_files(writer, tok_dir, chat_template=template,
                                tokenizer=union.files if union is not None else None)
    if not set(tok_files) & set(VOCABULARY_FILES):
        notes.append(f"no tokenizer files found in {tok_dir}: the merged folder cannot "
                     "generate text until tokenizer files are added (copy them from System "
                     "2's folder, or merge again with tokenizer_source / --tokenizer-source)")
    writer.write_text("README.md", model_card(r, writer.weights_hash, inputs, notes, tok_files))
    writer.write_text("l2s_recipe.yaml", r.to_yaml())
    writer.write_json(MERGE_INFO, {
        "l2s_kit_version": __version__,
        "recipe": r.to_dict(),
        "recipe_hash": r.hash,
        "weights_hash": writer.weights_hash,
        "notes": [*r.notes, *notes],
    })


def merge(recipe: Recipe | dict | str | os.PathLike, out: str | os.PathLike, *,
          overwrite: bool = False, shard_size: int | str | None = None, device: str | None = None,
          progress: bool = True, force: bool = False) -> MergeResult:
    """Merge the checkpoints of ``recipe`` into the folder ``out`` and return its path.

    The recipe is validated and the checkpoints' headers are checked for compatibility before any
    tensor is read. Tensors stream one at a time (large ones in blocks of rows); the output folder
    (sharded safetensors + index, config.json, tokenizer files, generation_config.json, README.md
    model card, l2s_recipe.yaml, l2s_merge.json) appears complete or not at all. An existing
    ``out`` is only replaced with ``overwrite=True``. What :func:`pair_check_notes` says blocks
    the merge (``l2s check``'s verdict) refuses it unless ``force=True``.
    """
    r = _recipe(recipe)
    if device is not None:  # the caller's recipe stays as it is
        r = dataclasses.replace(r, device=device)
    check_apart(out, recipe_inputs(r))
    check_out(Path(out), overwrite)  # before any work
    inputs = [Checkpoint(r.base_model), *[Checkpoint(m.model) for m in r.models]]
    union = _union(r, inputs)
    jobs, changes, notes = _plan(r, inputs, union)
    notes += pair_check_notes(r, inputs)
    _refuse_blocked(notes, force)
    config, choices = merged_config(r, inputs)
    notes += choices
    if union is not None:
        notes += union.notes
    tok_dir = Path(r.source_path(r.tokenizer_source if union is None else "base"))
    template = _template(r, tok_dir, notes)
    size = parse_size(shard_size) if shard_size is not None else r.shard_size
    with CheckpointWriter(out, [j.out for j in jobs], shard_size=size,
                          overwrite=overwrite) as writer:
        notes += run_merge(inputs, r.method, r.merge_parameters, r.weights, jobs, writer.write,
                           compute_dtype=r.dtype, device=r.device, progress=progress)
        writer.write_json("config.json", {**config, **changes})
        _write_side_files(writer, r, inputs, union, tok_dir, template, notes)
        for source in inputs:  # no output from a checkpoint rewritten while it was read
            source.check_unchanged()
    result = MergeResult(out)
    result.weights_hash, result.recipe_hash = writer.weights_hash, r.hash
    result.notes = notes
    return result


def _union(r: Recipe, inputs: list):
    """The union vocabulary of ``tokenizer_source: union`` (:mod:`l2s_kit.merging.vocab`), or
    None: each input's tokens limited to the rows it has (its config's vocab_size, its
    embedding's rows)."""
    if r.tokenizer_source != UNION:
        return None
    from l2s_kit.io.names import EMBED_SUFFIXES
    from l2s_kit.merging.vocab import build_union

    sizes = []
    for src in inputs:
        embed = next((n for n in src.names if n.endswith(EMBED_SUFFIXES)), None)
        if embed is None:
            raise RecipeError(f"tokenizer_source union: {src.path} has no embedding tensor")
        rows = src.info(embed).shape[0]
        sizes.append(min(rows, src.config.get("vocab_size") or rows))
    return build_union([r.base_model, *(m.model for m in r.models)], sizes)


def _plan(r: Recipe, inputs: list, union=None) -> tuple[list, dict, list[str]]:
    """The merge's plan (:func:`plan_merge`), or of a layer stack, :func:`plan_stack`'s."""
    if r.stack is None:
        return plan_merge(inputs, DTYPES.get(r.out_dtype), union)
    paths = [r.base_model, *(m.model for m in r.models)]
    slices = [Slice(paths.index(s["model"]), *s["layer_range"],
                    s.get("parameters", {}).get("scale", 1.0)) for s in r.stack]
    return plan_stack(inputs, slices, DTYPES.get(r.out_dtype))


def recipe_inputs(r: Recipe) -> dict[str, str]:
    """What a merge reads: base, models, tokenizer and config sources (named for messages)."""
    out = {"base model": r.base_model}
    out.update({f"model {i + 1}": m.model for i, m in enumerate(r.models)})
    for what, src in (("tokenizer source", r.tokenizer_source), ("config source", r.config_source),
                      *((f"config_keys.{k}", v) for k, v in r.config_keys.items())):
        if src not in ("base", "model", UNION) and src not in out.values():
            out[what] = src
    return out


def merged_config(r: Recipe, inputs: list | None = None) -> tuple[dict, list[str]]:
    """The merged folder's config.json: ``config_source``'s (the architecture; the base's by
    default), then each key of ``config_keys`` from its own source (what governs generation:
    System 2's by default). Returns it with a note for every key whose value is not the
    base's."""
    def config_of(source: str) -> dict:
        if source == "base" and inputs:
            return inputs[0].config
        if source == "model" and inputs and len(inputs) > 1:
            return inputs[1].config
        return Checkpoint(r.source_path(source)).config

    base = config_of("base")
    config = dict(config_of(r.config_source))
    notes = []
    label = {"base": "System 1 (base)", "model": "System 2 (the first model)"}
    for key, source in r.config_keys.items():
        src = config_of(source)
        if key in src:
            config[key] = src[key]
        else:  # taken from its source, absence included (no System 1 rope beside System 2's length)
            config.pop(key, None)
        if config.get(key, "(absent)") != base.get(key, "(absent)"):
            notes.append(f"config.json {key}: {config.get(key, '(absent)')} from "
                         f"{label.get(source, source)} (System 1 has {base.get(key, '(absent)')})")
    from l2s_kit.merging.recipe import CONTEXT_KEYS

    if any(config.get(k, "(absent)") != base.get(k, "(absent)") for k in CONTEXT_KEYS):
        source = r.config_keys[CONTEXT_KEYS[0]]
        notes.append(f"context length, rope and sliding window ({', '.join(CONTEXT_KEYS)}) are "
                     f"one choice, all from {label.get(source, source)}")
    return config, notes


def pair_check_notes(r: Recipe, inputs: list) -> list[str]:
    """What :func:`l2s_kit.merging.compat.pair_differences` finds between the base and each model that is
    not harmless, as card notes (``inputs``: the opened checkpoints, base first; the architecture's
    own notes come from the merge plan, and the config keys of ``config_keys`` from
    :func:`merged_config`)."""
    from l2s_kit.merging.compat import HARMLESS, pair_differences

    out = []
    for m, opened in zip(r.models, inputs[1:]):
        for d in pair_differences(r.base_model, m.model, config_source=r.config_source,
                         tokenizer_source=r.tokenizer_source, config_keys=r.config_keys,
                         opened=(inputs[0], opened), plan=False):
            if d.area == "config" and d.item in r.config_keys:
                continue
            if d.verdict != HARMLESS:
                what = f"{d.area} {d.item}" if d.area != "config" else f"config.json {d.item}"
                out.append(f"check ({d.verdict}): {what} differs (base {d.base!s:.60}, "
                           f"{Path(m.model).name} {d.model!s:.60}): {d.note}")
    return out


def merge_key(r: Recipe) -> str:
    """What identifies a merge before it is made: the recipe hash and the identity of everything
    it reads (:func:`l2s_kit.io.checkpoint_key` of each checkpoint: weights, config and tokenizer
    files; the files of a separate config or tokenizer source), so a checkpoint replaced or edited
    in its folder gives another key. 12 hex digits."""
    from l2s_kit.io import checkpoint_key, files_hash

    checkpoints = {r.base_model, *(m.model for m in r.models)}
    inputs = {role: checkpoint_key(p) if p in checkpoints else files_hash(p)
              for role, p in recipe_inputs(r).items()}
    blob = json.dumps({"recipe": r.hash, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def merge_once(r: Recipe, root: str | os.PathLike, name: str, *,
               device: str | None = None) -> Path:
    """Merge the recipe ``r`` into ``root/<name>-<merge key>`` unless that folder exists (a merge
    folder appears complete or not at all, so an existing one is finished); returns the folder.
    The key (:func:`merge_key`) covers the recipe and its inputs' weights, so
    a changed input checkpoint gives a new folder instead of reusing a stale merge. Grids, sweeps
    and studies reuse their merges through this."""
    folder = Path(root) / f"{name}-{merge_key(r)}"
    if not folder.exists():
        merge(r, folder, device=device, progress=False)
    return folder


def merge_in_memory(recipe: Recipe | dict | str | os.PathLike, *, device: str | None = None,
                    progress: bool = False) -> dict[str, torch.Tensor]:
    """Run ``recipe`` and return the merged state dict instead of writing it (small models)."""
    r = _recipe(recipe)
    if r.stack is not None or r.tokenizer_source == UNION:
        raise RecipeError(("a layer stack" if r.stack is not None else "a union vocabulary")
                          + " makes a new checkpoint with its own tokenizer; write it with "
                          "merge(recipe, out) (l2s merge), not in memory")
    return merge_state_dicts(r.merge_method, r.base_model, [m.model for m in r.models], r.weights,
                             out_dtype=r.out_dtype, device=device or r.device, progress=progress,
                             **r.merge_parameters)


def read_merge_info(path: str | os.PathLike) -> dict:
    """The ``l2s_merge.json`` record of a merged checkpoint folder."""
    p = Path(path) / MERGE_INFO
    if not p.exists():
        raise CheckpointError(f"{path} has no {MERGE_INFO}; it was not written by l2s merge")
    return json.loads(p.read_text())

