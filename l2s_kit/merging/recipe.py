"""Merge recipes: mergekit's YAML shape with l2s_kit's parameter names, validated before any tensor.

.. code-block:: yaml

    merge_method: ties
    base_model: /models/Qwen2.5-Math-7B            # System 1: task vectors are measured from it
    models:
      - model: /models/DeepSeek-R1-Distill-Qwen-7B # System 2
        parameters: {weight: 1.0}
    parameters: {k: 0.8, alpha: 1.0}
    dtype: float32          # compute dtype (float32 or float64)
    out_dtype: bfloat16     # stored dtype; default: each tensor keeps the base's dtype
    tokenizer_source: model # tokenizer and generation_config.json: model (System 2, the
                            # default), base, or the path of a folder with tokenizer files
    config_source: base     # config.json (the architecture): base (default), model or a folder
    config_keys: {max_position_embeddings: model}  # per-key choices (see GENERATION_KEYS)

The merge is meant to behave as System 2 does, only shorter, so by default what governs
generation comes from System 2: the tokenizer (special tokens, chat template),
``generation_config.json``, and the ``config.json`` keys in ``GENERATION_KEYS`` (context length,
rope, sliding window, bos / eos / pad ids); the architecture comes from the base. The paper's
presets keep the paper's choice (everything from System 1, as its scripts did), with a note.

``preset: ties-7b`` fills ``merge_method`` and ``parameters`` with the paper's published setting;
explicit ``parameters`` override it. A mergekit configuration of any method both tools have
(``l2s methods`` lists each one's mergekit name) is read through :mod:`l2s_kit.merging.mergekit`,
and every translation is listed in ``Recipe.notes``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from l2s_kit.errors import RecipeError
from l2s_kit.io import DTYPES
from l2s_kit.io.yamlfile import safe_load
from l2s_kit.merging.mergekit import from_mergekit
from l2s_kit.merging.methods.settings import PRESETS
from l2s_kit.merging.registry import PerModel, get_method
from l2s_kit.merging.schedule import model_weight

COMPUTE_DTYPES = ("float32", "float64")  # the maths runs in one of these
OUT_DTYPES = tuple(DTYPES)  # names of l2s_kit.io.DTYPES
TOP_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype",
            "tokenizer_source", "config_source", "config_keys", "preset", "shard_size", "device",
            "name", "chat_template"}  # and mergekit's slices and tokenizer
# config.json keys that govern generation, not the tensors: taken from System 2 by default
# ... of which these go together (a context length is only right with its own rope): one source
CONTEXT_KEYS = ("max_position_embeddings", "rope_theta", "rope_scaling", "rope_parameters",
                "sliding_window", "use_sliding_window", "max_window_layers")
GENERATION_KEYS = (*CONTEXT_KEYS, "bos_token_id", "eos_token_id", "pad_token_id")
SOURCES = ("base", "model")  # or a folder
UNION = "union"  # tokenizer_source: the union of the inputs' vocabularies (l2s_kit.merging.vocab)
MERGEKIT_KEYS = {"int8_mask", "slices", "tokenizer"}  # translated



def parse_size(value: int | str, where: str = "shard_size") -> int:
    """'2GB', '500MB', '1GiB' or an int of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        s = value.strip().upper().replace(" ", "")
        units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9,
                 "B": 1}
        for u, mult in units.items():
            if s.endswith(u):
                try:
                    n = float(s[: -len(u)])
                except ValueError:
                    break
                if n > 0 and math.isfinite(n):
                    return int(n * mult)
                break
        if s.isdigit() and int(s) > 0:
            return int(s)
    raise RecipeError(f"{where} must be a positive size such as '2GB' or 500000000, got {value!r}")


def check_device(device: object, where: str = "device") -> str:
    """'cpu', 'cuda' or 'cuda:N', else a RecipeError naming ``where``."""
    if isinstance(device, str) and re.fullmatch(r"cpu|cuda(:\d+)?", device):
        return device
    raise RecipeError(f"{where} must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


@dataclass
class ModelSpec:
    model: str
    parameters: dict = field(default_factory=dict)

    @property
    def weight(self) -> float | list:
        """The model's weight: a number, or a layer schedule (a gradient over the layers or
        filter conditions, :mod:`l2s_kit.merging.schedule`) resolved per tensor by the merge."""
        w = self.parameters.get("weight", 1.0)
        return w if isinstance(w, list) else float(w)


@dataclass
class Recipe:
    """A validated merge recipe. Build with ``load_recipe`` (file, dict or YAML text)."""

    merge_method: str
    base_model: str
    models: list[ModelSpec]
    parameters: dict
    dtype: str = "float32"
    out_dtype: str | None = None
    tokenizer_source: str = "model"
    config_source: str = "base"
    config_keys: dict = field(default_factory=dict)  # config.json key → base / model / folder
    shard_size: int = 2 * 10**9
    device: str = "cpu"
    name: str | None = None
    notes: list[str] = field(default_factory=list)
    chat_template: str | None = None  # auto, chatml or a template (see load_recipe)
    # a layer stack (passthrough): [{model, layer_range: [a, b], parameters: {scale}}] in order;
    # base_model is the first slice's model, models the others
    stack: list[dict] | None = None

    @property
    def method(self):
        return get_method(self.merge_method)

    @property
    def weights(self) -> list[float]:
        return [m.weight for m in self.models]

    @property
    def merge_parameters(self) -> dict:
        """The parameters the merge runs with: ``parameters``, where a parameter some model gives
        its own value of (``models[i].parameters``) is a :class:`PerModel` of every model's value
        (the merge's value for the models that give none)."""
        params = dict(self.parameters)
        for k in self.method.per_model_of(params):
            if any(k in m.parameters for m in self.models):
                params[k] = PerModel(m.parameters.get(k, params[k]) for m in self.models)
        return params

    def to_dict(self) -> dict:
        """The recipe in its canonical YAML/dict form (what the model card records)."""
        inputs = {"base_model": self.base_model, "models": [
            {"model": m.model, "parameters": dict(m.parameters)} for m in self.models]}
        if self.stack is not None:  # mergekit's form, which a recipe loads back from
            inputs = {"slices": [{"sources": [copy.deepcopy(s)]} for s in self.stack]}
        d = {
            "merge_method": self.merge_method,
            **inputs,
            "parameters": dict(self.parameters),
            "dtype": self.dtype,
            "out_dtype": self.out_dtype,
            "tokenizer_source": self.tokenizer_source,
            "config_source": self.config_source,
            "config_keys": dict(self.config_keys),
        }
        if self.chat_template is not None:
            d["chat_template"] = self.chat_template
        if self.name:
            d["name"] = self.name
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def source_path(self, source: str) -> str:
        """The folder a source names: "base" → base_model, "model" → the first model (System 2),
        else the folder itself."""
        return {"base": self.base_model, "model": self.models[0].model}.get(source, source)

    @property
    def hash(self) -> str:
        """Short content hash of the canonical recipe (method, parameters, inputs, dtypes)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def with_parameters(self, **params) -> Recipe:
        """A copy with some method parameters changed (validated)."""
        d = self.to_dict()
        d["parameters"] = override_parameters(self.method, d["parameters"], params)
        return load_recipe(d, check_paths=False)


def override_parameters(method, old: dict, new: dict) -> dict:
    """``old`` parameters updated by ``new``; when ``new`` gives a wrapping method (AIM) another
    inner merge, the old inner merge's parameters are dropped (they belong to the old one)."""
    if method.wraps and method.inner_of({**old, **new}) != method.inner_of(old):
        old = {k: v for k, v in old.items() if k in method.params}
    return {**old, **new}


def _chat_template(value, where: str, relative_to: Path | None) -> str | None:
    """A recipe's ``chat_template`` (mergekit's): ``auto``, a built-in name (``chatml``), a
    ``.jinja`` file (its text is taken) or the template itself."""
    from l2s_kit.merging.vocab import BUILTIN_TEMPLATES

    if value is None or value == "auto" or value in BUILTIN_TEMPLATES:
        return value
    if isinstance(value, str) and value.endswith(".jinja") and "\n" not in value:
        p = Path(os.path.expanduser(value))
        if not p.is_absolute() and relative_to is not None and not p.exists():
            p = relative_to / p
        if not p.is_file():
            raise RecipeError(f"{where}: chat_template file {value} does not exist")
        try:
            return p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise RecipeError(f"{where}: chat_template file {p} is not UTF-8 text") from None
    if not isinstance(value, str) or len(value) < 20 or "{" not in value:
        raise RecipeError(f"{where}: chat_template must be auto, "
                          f"{', '.join(BUILTIN_TEMPLATES)}, a .jinja file or a Jinja template "
                          f"(text with {{% ... %}}), got {str(value)[:40]!r}")
    return value


def _resolve_path(value: str, field_name: str, relative_to: Path | None, check: bool) -> str:
    if not isinstance(value, str) or not value:
        raise RecipeError(f"{field_name} must be a path to a checkpoint folder, got {value!r}")
    p = Path(os.path.expanduser(value))
    if not p.is_absolute() and not p.exists() and relative_to is not None:
        alt = relative_to / p
        if alt.exists():
            p = alt
    if check and not p.exists():
        from l2s_kit.io.hub import hub_id, resolve_checkpoint

        if hub_id(value) is not None:  # a hub id: its snapshot in the hub cache
            p = Path(resolve_checkpoint(value, field_name))
    if check:
        if not p.exists():
            raise RecipeError(
                f"{field_name}: checkpoint folder '{value}' does not exist (looked in the current "
                f"folder{' and next to the recipe' if relative_to else ''}); give a local "
                "checkpoint folder or a hub id (owner/name, e.g. Qwen/Qwen2.5-Math-7B)"
            )
        if not p.is_dir():
            raise RecipeError(f"{field_name}: '{value}' is not a folder")
    return str(p)


def _read_mapping(source) -> tuple[dict, Path | None, str]:
    """The recipe's mapping (a copy of a dict, or parsed YAML from a file or text), the folder
    relative paths are read from, and how messages name the recipe. Unknown fields are refused."""
    relative_to, where = None, "recipe"
    if isinstance(source, dict):
        d = copy.deepcopy(source)
    else:
        p = None if isinstance(source, str) and "\n" in source else Path(source)
        if p is not None:
            if not p.exists():
                raise RecipeError(f"recipe file {p} does not exist")
            if p.is_dir():
                raise RecipeError(f"{p} is a folder; give the recipe's YAML file")
            try:
                text = p.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise RecipeError(f"{p} is not UTF-8 text (byte {e.start}); save the recipe as "
                                  "UTF-8") from None
            relative_to, where = p.resolve().parent, str(p)
        else:
            text = str(source)
        try:
            d = safe_load(text)
        except yaml.YAMLError as e:
            raise RecipeError(f"{where} is not valid YAML: {e}") from e
    if not isinstance(d, dict):
        raise RecipeError(f"{where}: a recipe is a mapping with merge_method, base_model, models")
    for key, kind, example in (("merge_method", str, "a name such as ties"),
                               ("preset", str, "a name such as ties-7b"),
                               ("parameters", dict, "a mapping such as {alpha: 0.7}"),
                               ("models", list, "a list such as [{model: path}]")):
        if d.get(key) is not None and not isinstance(d[key], kind):
            raise RecipeError(f"{where}: {key} must be {example}, got {d[key]!r}")
    unknown = sorted(set(d) - TOP_KEYS - MERGEKIT_KEYS)
    if unknown:
        raise RecipeError(f"{where}: unknown field '{unknown[0]}'; valid fields: "
                          + ", ".join(sorted(TOP_KEYS)))
    return d, relative_to, where


def _apply_preset(d: dict, where: str, notes: list[str]) -> bool:
    """``preset: NAME`` replaced by its method and parameters (the recipe's own parameters
    override the preset's); whether there was one."""
    if "preset" not in d:
        return False
    name = d.pop("preset")
    if name not in PRESETS:
        raise RecipeError(f"{where}: unknown preset '{name}'; available: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if d.get("merge_method") not in (None, preset["merge_method"]):
        raise RecipeError(f"{where}: preset '{name}' is a {preset['merge_method']} merge, but "
                          f"merge_method says {d['merge_method']}")
    d["merge_method"] = preset["merge_method"]
    d["parameters"] = override_parameters(get_method(preset["merge_method"]),
                                          preset["parameters"], d.get("parameters") or {})
    notes.append(f"preset {name}: {preset['merge_method']} {preset['parameters']}")
    return True


def _model_specs(d: dict, where: str, relative_to: Path | None, check_paths: bool, method
                 ) -> list[ModelSpec]:
    """The recipe's ``models`` (a non-empty list): each a folder with an optional per-model
    ``weight`` and per-model values of the parameters the method takes per model."""
    per_model = method.per_model_of(d.get("parameters") or {})
    accepted = method.accepts(d.get("parameters") or {})
    models = []
    for i, m in enumerate(d["models"]):
        if isinstance(m, str):
            m = {"model": m}
        if not isinstance(m, dict) or "model" not in m:
            raise RecipeError(f"{where}: models[{i}] must be a mapping with 'model'")
        extra = sorted(set(m) - {"model", "parameters"})
        if extra:
            raise RecipeError(f"{where}: models[{i}] has unknown field '{extra[0]}'")
        mp = m.get("parameters") or {}
        if not isinstance(mp, dict):
            raise RecipeError(f"{where}: models[{i}].parameters must be a mapping such as "
                              f"{{weight: 0.5}}, got {mp!r}")
        mp = dict(mp)
        bad = sorted(set(mp) - {"weight", *per_model})
        if bad:
            names = ["weight", *(k if accepted[k].mergekit is None else
                                 f"{k} (mergekit: {accepted[k].mergekit.name})"
                                 for k in per_model)]
            raise RecipeError(f"{where}: models[{i}].parameters: unknown parameter '{bad[0]}'; "
                              f"per-model parameters of {method.name}: {', '.join(names)} (the "
                              "others go under 'parameters')")
        if "weight" in mp:
            mp["weight"] = model_weight(mp["weight"], f"{where}: models[{i}]")
        for k in per_model:
            if k in mp:
                mp[k] = method.check_model_value(d.get("parameters") or {}, k, mp[k],
                                                 f"{where}: models[{i}].parameters")
        models.append(ModelSpec(_resolve_path(m["model"], f"models[{i}].model", relative_to,
                                              check_paths), mp))
    return models


def _mean(w) -> float:
    from l2s_kit.merging.schedule import numbers

    values = numbers(w) if isinstance(w, list) else [w]
    return sum(values) / len(values)


def same_checkpoint(a: str, b: str) -> bool:
    """Whether two checkpoint folders are one: the same folder (through ``..``, a trailing slash
    or a symlink), or folders whose weight files are the same files (hard links)."""
    pa, pb = Path(a), Path(b)
    if pa.resolve() == pb.resolve():
        return True
    fa, fb = sorted(pa.glob("*.safetensors")), sorted(pb.glob("*.safetensors"))
    return bool(fa) and [f.name for f in fa] == [f.name for f in fb] and all(
        os.path.samefile(x, y) for x, y in zip(fa, fb))


def _sources(d: dict, where: str, from_preset: bool, relative_to: Path | None,
             check_paths: bool, notes: list[str], stack: bool = False) -> dict[str, str]:
    """Where the tokenizer, config.json and each generation key come from, set in ``d``
    (``tokenizer_source``, ``config_source``); returns ``config_keys``. What governs generation
    is System 2's by default; the paper's presets keep System 1's, a layer stack the first
    slice's model's."""
    default = "base" if from_preset else "model"
    if from_preset and not stack and "tokenizer_source" not in d and "config_keys" not in d:
        notes.append("the preset keeps the paper's choice: config.json, tokenizer and "
                     "generation_config.json from System 1 (base), as the paper's scripts did; "
                     "give tokenizer_source: model and config_keys to take what governs "
                     "generation from System 2")
    d.setdefault("tokenizer_source", default)
    for key in ("tokenizer_source", "config_source"):
        val = d.get(key) or "base"
        if key == "tokenizer_source" and val == UNION:
            continue
        if val not in SOURCES:
            try:
                val = _resolve_path(val, key, relative_to, check_paths)
            except RecipeError as e:
                raise RecipeError(f"{e} ({key} is base, model"
                                  + (", union" if key == "tokenizer_source" else "")
                                  + " or a folder)") from None
        d[key] = val
    given_keys = d.get("config_keys") or {}
    if not isinstance(given_keys, dict):
        raise RecipeError(f"{where}: config_keys maps config.json keys to base, model or a "
                          f"folder, e.g. {{max_position_embeddings: model}}; got {given_keys!r}")
    config_keys = {k: default for k in GENERATION_KEYS}
    for k, v in given_keys.items():
        if not isinstance(v, str) or not v:
            raise RecipeError(f"{where}: config_keys.{k} must be base, model or a folder, got {v!r}")
        config_keys[str(k)] = v if v in SOURCES else _resolve_path(v, f"config_keys.{k}",
                                                                   relative_to, check_paths)
    context = {config_keys[k] for k in CONTEXT_KEYS if k in given_keys}
    if len(context) > 1:
        raise RecipeError(f"{where}: config_keys give {', '.join(k for k in CONTEXT_KEYS if k in given_keys)} "
                          "from different sources; context length, rope and sliding window are one "
                          "choice (a context length is only right with its own rope): give them one")
    for k in CONTEXT_KEYS:  # one given: all of them follow
        config_keys[k] = next(iter(context), config_keys[k])
    return config_keys


def _check_shape(d: dict, where: str, method) -> None:
    """The recipe's fields that every method needs, for what ``method`` is (a merge or a stack)."""
    if method.stacks and d.get("tokenizer_source") == UNION:
        raise RecipeError(f"{where}: a layer stack keeps the first slice's model's vocabulary; "
                          "tokenizer_source union is for merges of models")
    if method.stacks and "stack" not in d:
        raise RecipeError(f"{where}: {method.name} stacks layers: give mergekit's slices "
                          "(slices: [{sources: [{model: PATH, layer_range: [0, 16]}]}, ...])")
    if not isinstance(d.get("models") or [], list) or (not d.get("models") and not method.stacks):
        raise RecipeError(f"{where}: 'models' must be a non-empty list of {{model: PATH}} entries "
                          "(the checkpoints merged into base_model)")
    if not d.get("base_model"):
        raise RecipeError(f"{where}: missing 'base_model' (the checkpoint task vectors are "
                          "measured from; System 1 in long-to-short merging)")


def _checkpoints(d: dict, where: str, relative_to: Path | None, check_paths: bool, method
                 ) -> tuple[str, list[ModelSpec], list[dict] | None]:
    """(base folder, models, layer stack or None), every folder resolved and checked."""
    stack = None
    if method.stacks:  # each slice's model resolved under its own name, base and models with it
        folder = {}
        for k, s_ in enumerate(d["stack"]):
            folder.setdefault(s_["model"], _resolve_path(
                s_["model"], f"slices[{k}].sources[0].model", relative_to, check_paths))
        stack = [{**s_, "model": folder[s_["model"]]} for s_ in d["stack"]]
        d["base_model"] = stack[0]["model"]
        d["models"] = [{"model": folder[m["model"]]} for m in d["models"]]
    base = _resolve_path(d["base_model"], "base_model", relative_to, check_paths)
    models = _model_specs(d, where, relative_to, check_paths, method)
    for i, m in enumerate(models):
        if check_paths and not method.stacks and same_checkpoint(base, m.model):
            raise RecipeError(f"{where}: models[{i}] {m.model} is the base_model {base} (the same "
                              "folder or the same weight files): merging a checkpoint with itself "
                              "gives it back; give System 2's folder")
    method.check_models(len(models), where)
    return base, models, stack


def _dtypes(d: dict, where: str) -> tuple[str, str | None]:
    """(compute dtype, stored dtype or None: each tensor keeps the base's)."""
    dtype = d.get("dtype") or "float32"
    if dtype not in COMPUTE_DTYPES:
        raise RecipeError(f"{where}: dtype (the compute dtype) must be one of {COMPUTE_DTYPES}, "
                          f"got {dtype!r}")
    out_dtype = d.get("out_dtype")
    if out_dtype is not None and out_dtype not in OUT_DTYPES:
        raise RecipeError(f"{where}: out_dtype must be one of {OUT_DTYPES}, got {out_dtype!r}")
    return dtype, out_dtype


def load_recipe(source: str | os.PathLike | dict, *, check_paths: bool = True) -> Recipe:
    """Read and validate a recipe from a YAML file, YAML text or a dict. Reads no tensors.

    Raises ``RecipeError`` naming the field for an unknown method or parameter, an out-of-range
    value, or a missing checkpoint folder.
    """
    d, relative_to, where = _read_mapping(source)
    notes: list[str] = []
    from_preset = _apply_preset(d, where, notes)
    if "merge_method" not in d:
        raise RecipeError(f"{where}: missing 'merge_method' (or 'preset')")
    from_mergekit(d, notes)
    method = get_method(d["merge_method"])  # raises with the list of methods
    _check_shape(d, where, method)
    base, models, stack = _checkpoints(d, where, relative_to, check_paths, method)
    params = method.resolve(d.get("parameters") or {}, f"{where}: parameters")
    # a weight schedule enters the notes as its mean (the notes describe, the merge resolves)
    notes += method.recipe_notes(params, [_mean(m.weight) for m in models])
    dtype, out_dtype = _dtypes(d, where)
    config_keys = _sources(d, where, from_preset or method.stacks, relative_to, check_paths,
                           notes, method.stacks)
    recipe = Recipe(
        merge_method=method.name, base_model=base, models=models, parameters=params,
        dtype=dtype, out_dtype=out_dtype, tokenizer_source=d["tokenizer_source"],
        config_source=d["config_source"], config_keys=config_keys,
        shard_size=parse_size(d.get("shard_size", 2 * 10**9)),
        device=check_device(d.get("device") or "cpu", f"{where}: device"), name=d.get("name"),
        notes=notes, stack=stack,
        chat_template=_chat_template(d.get("chat_template"), where, relative_to),
    )
    if recipe.merge_parameters != params:  # per-model values: the checks see every model's
        method.check_resolved(recipe.merge_parameters, f"{where}: models[*].parameters")
    return recipe
