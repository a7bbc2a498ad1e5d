"""mergekit as an import format: a mergekit configuration rewritten into a recipe's terms.

:func:`from_mergekit` takes the mapping read from a mergekit YAML file and rewrites it in place
into the shape :func:`l2s_kit.merging.load_recipe` validates, listing every translation in
``notes`` (each lands in ``Recipe.notes`` and the model card):

- ``slices``: one slice over every layer of each model -> ``models``; passthrough's slices
  (one source each) -> a layer stack;
- ``tokenizer: {source: ...}`` -> ``tokenizer_source``;
- the base listed among the models (mergekit's style) -> the base only;
- per-model parameters: the same value from every model -> the merge's; a parameter the
  method takes per model keeps each model's value (under the method's name, converted as it
  declares: mergekit's ``density`` is TIES' ``k = 1 - density``); others are refused;
- parameters under mergekit's names (``lambda``, ``density``, ...) -> the method's, as each
  method declares (:class:`~l2s_kit.merging.registry.Mergekit`), and options mergekit always
  has (``normalize``, ``rescale``) checked against what the method does;
- ``int8_mask`` ignored; a bfloat16 / float16 ``dtype`` -> float32 maths stored in that dtype.

Partial slices of models, ``tokenizer`` options beyond ``source`` and per-model values of a
parameter the method takes once are refused with the field named.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from l2s_kit.errors import RecipeError
from l2s_kit.merging.registry import get_method
from l2s_kit.merging.schedule import model_weight


def _translate_slices(d: dict, notes: list[str], method) -> None:
    """mergekit's ``slices``: of a stacking method (passthrough), the layer stack
    (``d["stack"]``); of another method, one slice over every layer of each source ->
    ``models``."""
    slices = d.pop("slices")
    if d.get("models"):
        raise RecipeError("give either 'slices' (mergekit) or 'models', not both")
    if method is not None and method.stacks:
        _stack(slices, d, notes)
        return
    if not isinstance(slices, list) or len(slices) != 1 or not isinstance(slices[0], dict) \
            or set(slices[0]) != {"sources"}:
        raise RecipeError("slices: a merge of models takes one slice whose sources all cover "
                          "every layer (or use models: instead); slices of parts of models are "
                          "stacked by merge_method: passthrough")
    models = []
    for i, src in enumerate(slices[0]["sources"] or []):
        if not isinstance(src, dict) or "model" not in src:
            raise RecipeError(f"slices[0].sources[{i}] must be a mapping with 'model'")
        lr = src.get("layer_range")
        if lr is not None and not (isinstance(lr, list) and len(lr) == 2):
            raise RecipeError(f"slices[0].sources[{i}].layer_range must be [first, end], got {lr!r}")
        n = _num_layers(src["model"])
        if lr is not None and n is not None and list(lr) != [0, n]:
            raise RecipeError(f"slices[0].sources[{i}].layer_range {lr}: l2s_kit merges whole "
                              f"models ({src['model']} has {n} layers: [0, {n}])")
        models.append({k: v for k, v in src.items() if k != "layer_range"})
    d["models"] = models
    notes.append("mergekit slices over every layer -> models")


def _stack(slices, d: dict, notes: list[str]) -> None:
    """mergekit's passthrough ``slices`` (one source each) -> ``d["stack"]``, with the first
    slice's model as ``base_model`` and the other models, once each, as ``models``."""
    if not isinstance(slices, list) or not slices:
        raise RecipeError("slices must be a non-empty list of {sources: [{model, layer_range}]}")
    stack = []
    for k, sl in enumerate(slices):
        if not isinstance(sl, dict) or set(sl) != {"sources"} or not isinstance(sl["sources"], list):
            raise RecipeError(f"slices[{k}] must be a mapping {{sources: [{{model, layer_range}}]}}")
        if len(sl["sources"]) != 1:
            raise RecipeError(f"slices[{k}]: {d.get('merge_method')} copies layers, so a slice has "
                              f"one source (got {len(sl['sources'])}); to merge the layers of "
                              "several models, merge them with another method first")
        src = sl["sources"][0]
        at = f"slices[{k}].sources[0]"
        if not isinstance(src, dict) or "model" not in src or "layer_range" not in src:
            raise RecipeError(f"{at} must be a mapping with 'model' and 'layer_range'")
        extra = sorted(set(src) - {"model", "layer_range", "parameters"})
        if extra:
            raise RecipeError(f"{at} has unknown field '{extra[0]}'")
        lr = src["layer_range"]
        if not (isinstance(lr, list) and len(lr) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in lr)
                and 0 <= lr[0] < lr[1]):
            raise RecipeError(f"{at}.layer_range must be [first, end] with 0 <= first < end "
                              f"(end excluded), got {lr!r}")
        params = src.get("parameters") or {}
        if not isinstance(params, dict) or set(params) - {"scale"}:
            raise RecipeError(f"{at}.parameters: a stacked slice takes only 'scale' (a factor, "
                              f"by tensor name like any schedule), got {params!r}")
        entry = {"model": src["model"], "layer_range": list(lr)}
        if "scale" in params:
            entry["parameters"] = {"scale": model_weight(params["scale"], at, "scale")}
        stack.append(entry)
    if d.get("base_model") and d["base_model"] != stack[0]["model"]:
        notes.append(f"base_model {d['base_model']}: not used by a layer stack (the embedding "
                     "comes from the first slice's model)")
    d["base_model"] = stack[0]["model"]
    others = []
    for s_ in stack[1:]:
        if s_["model"] != stack[0]["model"] and s_["model"] not in others:
            others.append(s_["model"])
    d["models"] = [{"model": m} for m in others]
    d["stack"] = stack


def _num_layers(path: str) -> int | None:
    try:
        cfg = json.loads((Path(os.path.expanduser(path)) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return cfg.get("num_hidden_layers")


def from_mergekit(d: dict, notes: list[str]) -> None:
    """Rewrite a mergekit recipe in place into l2s_kit's terms, noting each translation. What is
    mergekit's in general (slices, the base listed among the models, per-model parameters,
    ``int8_mask``, ``dtype``) is handled here; what belongs to a method (its parameters' mergekit
    names, the options it always has, recipe rewrites) is read from its declaration
    (:class:`~l2s_kit.merging.registry.Mergekit`, :class:`~l2s_kit.merging.registry.MergekitName`)."""
    d["parameters"] = params = d.get("parameters") or {}
    try:
        method = get_method(d.get("merge_method"))
    except RecipeError:
        method = None  # load_recipe names the unknown method
    if "slices" in d:
        _translate_slices(d, notes, method)
    models = d.get("models") or []
    base = d.get("base_model")
    if base and any(isinstance(m, dict) and m.get("model") == base for m in models):
        d["models"] = [m for m in models if not (isinstance(m, dict) and m.get("model") == base)]
        if not d["models"]:
            raise RecipeError(f"models: every model is the base_model {base}; give the folder of "
                              "the checkpoint to merge into it (System 2) as a model")
        notes.append("base_model listed among models (mergekit style): taken as the base only")
    if method is not None:
        given = d["merge_method"]
        if given != method.name:
            notes.append(f"merge_method {given}: {method.name}")
        if method.mergekit.adapt is not None:
            method.mergekit.adapt(d, notes)
        declared = method.accepts(params)
        renamed = {}  # mergekit name -> the parameter it gives (the first one that declares it)
        for p in declared.values():
            if p.mergekit is not None and p.mergekit.name not in declared:
                renamed.setdefault(p.mergekit.name, p)
        mergekit_names = [n for n, p in declared.items() if p.mergekit is None]  # same in both
        per_model = method.per_model_of(params)
        for key in (*mergekit_names, *renamed, *method.mergekit.implied):
            target = renamed.get(key) or declared.get(key)
            _pull_model_param(d, key, notes, target if target is not None
                              and target.name in per_model else None)
        for key, p in renamed.items():
            if key in params:
                _rename_param(params, key, p, notes)
        for key, (value, why) in method.mergekit.implied.items():
            if key in params and key not in declared:
                got = params.pop(key)
                if got != value:
                    raise RecipeError(f"parameters.{key}: {json.dumps(got)} is not supported for "
                                      f"{given}; {why}")
                notes.append(f"{key} {json.dumps(got)}: {why}")
    if params.pop("int8_mask", None) is not None or d.pop("int8_mask", None) is not None:
        notes.append("int8_mask: ignored (it only changes the dtype of mergekit's sign mask)")
    if d.get("dtype") in ("bfloat16", "float16"):
        if not d.get("out_dtype"):
            d["out_dtype"] = d["dtype"]
        notes.append(f"dtype {d['dtype']}: l2s_kit computes in float32 and stores {d['out_dtype']}")
        d["dtype"] = "float32"
    if "tokenizer" in d:
        _translate_tokenizer(d, notes)


def _translate_tokenizer(d: dict, notes: list[str]) -> None:
    """mergekit's ``tokenizer: {source: union | base | PATH}`` -> ``tokenizer_source``."""
    tok = d.pop("tokenizer")
    if not isinstance(tok, dict) or "source" not in tok:
        raise RecipeError(f"tokenizer must be a mapping such as {{source: union}}, got {tok!r}")
    extra = sorted(set(tok) - {"source"})
    if extra:
        raise RecipeError(f"tokenizer.{extra[0]} (mergekit) is not supported by l2s_kit: the "
                          "union has one embedding row per token, each given by mergekit's "
                          "default rule; remove it")
    if "tokenizer_source" in d:
        raise RecipeError("give either tokenizer.source (mergekit) or tokenizer_source, not both")
    d["tokenizer_source"] = tok["source"]
    notes.append(f"tokenizer.source {tok['source']} -> tokenizer_source")


def _pull_model_param(d: dict, key: str, notes: list[str], per_model=None) -> None:
    """A mergekit parameter the models give (``models[i].parameters.key``). The same value from
    every model, and none for the merge, is moved to the merge's parameters. Otherwise, for a
    parameter the method takes per model (``per_model``: that :class:`Param`), each model keeps
    its own value under the method's name (converted as it declares: mergekit's ``density`` is
    TIES' ``k = 1 − density``) and a model without one takes the merge's, as in mergekit; for
    any other parameter, different values are refused."""
    models = [m for m in d.get("models") or [] if isinstance(m, dict)]
    given = [m for m in models if key in (m.get("parameters") or {})]
    if not given:
        return
    vals = {json.dumps(m["parameters"][key]) for m in given}
    if len(vals) == 1 and len(given) == len(models) and key not in d["parameters"]:
        d["parameters"][key] = json.loads(vals.pop())
        for m in models:
            m["parameters"].pop(key)
        notes.append(f"moved per-model '{key}' to the merge's parameters")
        return
    if per_model is None:
        raise RecipeError(
            f"models[*].parameters.{key}: l2s_kit takes one {key} for the whole merge; "
            f"give it once under 'parameters' (got {', '.join(sorted(vals))}"
            + (f" and {json.dumps(d['parameters'][key])} under 'parameters'"
               if key in d["parameters"] else "") + ")")
    convert = per_model.mergekit.convert if key != per_model.name else None
    for i, m in enumerate(models):
        mp = m.get("parameters") or {}
        if key not in mp:
            continue
        if key != per_model.name and per_model.name in mp:
            raise RecipeError(f"models[{i}].parameters: give either '{key}' (mergekit) or "
                              f"'{per_model.name}', not both")
        value = mp.pop(key)
        if convert is not None:
            try:
                value = _map_numbers(value, convert)
            except TypeError:
                raise RecipeError(f"models[{i}].parameters.{key} must be a number or a layer "
                                  f"schedule, got {value!r}") from None
        mp[per_model.name] = value
    if key != per_model.name:
        notes.append(f"per-model {key} -> per-model {per_model.name}"
                     + (" = 1 - density" if convert is not None and key == "density" else ""))


def _rename_param(params: dict, key: str, p, notes: list[str]) -> None:
    """mergekit's ``key`` → the method's parameter ``p`` (converted as it declares)."""
    if p.name in params:
        raise RecipeError(f"parameters: give either '{key}' (mergekit) or '{p.name}', not both")
    old = params.pop(key)
    new = old
    if p.mergekit.convert is not None:
        try:
            new = _map_numbers(old, p.mergekit.convert)
        except TypeError:
            raise RecipeError(f"parameters.{key} must be a number or a layer schedule, got "
                              f"{old!r}") from None
    params[p.name] = new
    notes.append((p.mergekit.note or "{key} {old} -> {name} {new}").format(
        key=key, old=old, new=new, name=p.name))


def _map_numbers(value, fn):
    """``fn`` applied to a number, or to every number of a layer schedule (same shape)."""
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, (int, float)):
        return fn(value)
    if isinstance(value, list):
        return [({**x, "value": _map_numbers(x["value"], fn)} if isinstance(x, dict) and "value" in x
                 else _map_numbers(x, fn)) for x in value]
    raise TypeError(value)
