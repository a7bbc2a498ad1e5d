"""The registry of merge methods. A method is a decorated pure function whose signature is its schema.

Every method has the same shape::

    @merge_method("task_arithmetic", paper="https://arxiv.org/abs/2212.04089")
    def task_arithmetic(base, models, weights, *, alpha: Annotated[float, Range(0, 10)] = 1.0):
        ...

- ``base`` (Tensor), ``models`` (list of Tensors, same shape as base) and ``weights`` (one float per
  model) are positional; tensors arrive in the compute dtype, the result is returned in it.
- Keyword-only parameters with defaults are the method's recipe parameters. Their annotation gives
  the type (float, int, bool, str), a ``Literal[...]`` gives the choices, and ``Range`` in an
  ``Annotated[...]`` gives the allowed interval; ``Search(lo, hi, step)`` beside it, where to
  look for a good value (the explorer's slider and ``l2s tune``'s default interval).
- Keyword-only parameters annotated ``State`` are not recipe parameters: they are per-tensor state
  that the method's own ``prepare`` hook computes (DARE masks seeded per tensor name, trim
  thresholds over a tensor streamed in blocks or over the whole model, AIM's per-channel
  importance, Sens-Merging's per-layer coefficients). Called directly, a method builds them itself
  from the tensor or falls back to a neutral value.
- ``prepare`` (optional), ``prepare(run, params) -> state``, is called by the engine once before
  merging with the merge's context ``run`` (:class:`l2s_kit.merging.engine.MergeRun`: inputs,
  planned tensors, weights, device, ``run.delta(job, i, rows)``) and the resolved parameters. It
  returns ``state(job)``, called once per output tensor, which returns ``block(rows) -> dict`` of
  the State arguments for each block of that tensor. The engine knows no method's parameters:
  everything a method needs per tensor is planned here, in the method's own module.
- ``check`` (optional) validates the resolved parameters further (say, that a calibration file
  exists) when the recipe is loaded, before any tensor is read; ``calibrated=True`` marks a method
  that reads calibration data (it cannot be the inner merge of a wrapping method).
- ``wraps=True`` marks a method applied on top of another merge (AIM on TIES): it has a
  parameter ``inner`` naming that merge, accepts the inner method's parameters beside its own
  (flat, in one ``parameters`` mapping: ``{omega: 0.4, inner: ties, k: 0.8, alpha: 1.0}``), and
  receives the inner merge's result of each block as the State argument ``merged``.

The registry checks every signature when the method is defined, so a malformed method fails at
import, not in the middle of a merge.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

from l2s_kit.errors import RecipeError


class _StateMarker:
    def __repr__(self) -> str:
        return "State"


# Annotation of a keyword-only argument that the method's ``prepare`` hook fills per tensor block.
State = typing.Annotated[object, _StateMarker()]


class PerModel(tuple):
    """A parameter given per model (mergekit's per-model parameters: ``density`` 0.3 for one
    model, 0.6 for another): one value per model, in the models' order, each a number or a
    layer schedule. A method receives it, for the parameters it declares ``per_model``, in place
    of the single value; :func:`model_value` reads model i's value from either."""

    def __repr__(self) -> str:
        return f"PerModel({list(self)!r})"


def model_value(value, i: int):
    """Model ``i``'s value of a parameter that may be given per model (:class:`PerModel`)."""
    return value[i] if isinstance(value, PerModel) else value


@dataclass(frozen=True)
class Range:
    """Allowed interval of a numeric parameter; ``lo_open`` / ``hi_open`` exclude the ends."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, x: float) -> bool:
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        if self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)):
            return False
        return True

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{'(' if self.lo_open or self.lo is None else '['}{lo}, {hi}{')' if self.hi_open or self.hi is None else ']'}"


@dataclass(frozen=True)
class Search:
    """Where to look for a good value of a numeric parameter: the interval (and step) that the
    explorer's sliders show and that ``l2s tune`` searches by default. Narrower than the allowed
    :class:`Range`: the values that make sense for long-to-short merging."""

    lo: float
    hi: float
    step: float

    def __post_init__(self):
        if not (self.lo < self.hi and 0 < self.step <= self.hi - self.lo):
            raise TypeError(f"Search({self.lo}, {self.hi}, {self.step}): need lo < hi and "
                            "0 < step <= hi - lo")


@dataclass(frozen=True)
class MergekitName:
    """How mergekit names a parameter, beside the method's own name for it: ``name`` (e.g.
    ``lambda`` for ``alpha``, ``density`` for TIES' ``k``), its value passed through ``convert``
    (a number, or each number of a layer schedule: ``density`` → ``k = 1 − density``), and the
    note a recipe records (``{old}``, ``{new}``: the values). A mergekit recipe is translated
    with these, so a method's mergekit vocabulary lives next to its function."""

    name: str
    convert: Callable[[float], float] | None = None
    note: str = ""


@dataclass(frozen=True)
class Mergekit:
    """What a mergekit recipe of this method says beyond its parameters.

    ``implied``: mergekit options whose value this method always has: option → (that value, why),
    e.g. TIES' ``normalize: true`` (the disjoint mean); another value is refused with the why.
    ``adapt(d, notes)``: rewrites the recipe mapping ``d`` before its parameters are translated
    (mergekit's ``linear`` without a base takes the first model as base). The method's aliases
    are its mergekit names (``linear``, ``dare_linear``)."""

    implied: dict = field(default_factory=dict)
    adapt: Callable[[dict, list], None] | None = None


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: object
    choices: tuple | None = None
    range: Range | None = None
    help: str = ""
    search: Search | None = None  # slider and default search interval (numeric parameters)
    mergekit: MergekitName | None = None  # what mergekit calls it, when another name

    def check(self, value: object, where: str, schedules: bool = False) -> object:
        """Return ``value`` converted to the parameter's type, or raise RecipeError naming
        ``where``. With ``schedules``, a float parameter may also be a layer schedule (a list:
        see :mod:`l2s_kit.merging.schedule`), returned in its canonical form."""
        if schedules and self.type is float and isinstance(value, list):
            from l2s_kit.merging.schedule import canonical

            try:
                return canonical(value, lambda x: self.check(x, where), where, self.name)
            except ValueError as e:
                raise RecipeError(str(e)) from None
        t = self.type
        ok = (
            isinstance(value, bool) if t is bool
            else isinstance(value, int) and not isinstance(value, bool) if t is int
            else isinstance(value, (int, float)) and not isinstance(value, bool) if t is float
            else isinstance(value, str)
        )
        if not ok:
            raise RecipeError(
                f"{where}: parameter '{self.name}' must be {t.__name__}, got {value!r}"
                + (" (a layer schedule is taken by float parameters of methods that plan per "
                   "tensor)" if isinstance(value, list) else "")
            )
        if t is float:
            value = float(value)
            if not math.isfinite(value):
                raise RecipeError(f"{where}: parameter '{self.name}' must be a finite number, got "
                                  f"{value!r}" + (f" ({self.help})" if self.help else ""))
        if self.choices is not None and value not in self.choices:
            raise RecipeError(
                f"{where}: parameter '{self.name}' must be one of {list(self.choices)}, got {value!r}"
            )
        if self.range is not None and not self.range.contains(value):
            raise RecipeError(
                f"{where}: parameter '{self.name}' = {value!r} is out of range {self.range}"
                + (f" ({self.help})" if self.help else "")
            )
        return value


@dataclass(frozen=True)
class MergeMethod:
    name: str
    fn: Callable
    paper: str
    title: str
    params: dict[str, Param]
    state_args: tuple[str, ...]  # arguments annotated State (filled by prepare)
    aliases: tuple[str, ...] = ()
    elementwise: bool = True  # can run on blocks of rows (true for the task-vector family)
    wraps: bool = False  # applied on top of the merge named by its parameter ``inner``
    prepare: Callable | None = None  # prepare(run, params) -> state(job) -> block(rows) -> dict
    check: Callable | None = None  # check(resolved params, where): further validation
    calibrated: bool = False  # reads calibration data
    notes_fn: Callable[[dict, list[float]], list[str]] | None = None
    n_models: tuple[int, int | None] = (1, None)  # how many models it merges into the base
    unscheduled: tuple[str, ...] = ()  # float parameters that cannot be layer schedules
    per_model: tuple[str, ...] = ()  # float parameters each model may give its own value of
    stacks: bool = False  # stacks layers of its inputs (mergekit's passthrough over slices)
    mergekit: Mergekit = Mergekit()  # what its mergekit recipes say beyond its parameters
    # layer_coefficients(paths, resolved params) -> {layer group: the coefficient it gives the
    # (first) model there}, for methods that scale the task vector per layer; and its label
    layer_coefficients: Callable[[list[str], dict], dict[str, float]] | None = None
    coefficient_label: str = ""
    # calibration_set(source, parts, samples, seed) -> the parameters that choose that calibration
    # set, for methods that calibrate on texts (a calibration sweep varies them)
    calibration_set: Callable[[str, str, int, int], dict] | None = None

    def check_models(self, n: int, where: str) -> None:
        """Refuse ``n`` models merged into the base when the method takes another number."""
        lo, hi = self.n_models
        if n < lo or (hi is not None and n > hi):
            want = (f"exactly {lo}" if lo == hi else f"{lo} to {hi}" if hi is not None
                    else f"at least {lo}")
            raise RecipeError(f"{where}: {self.name} merges {want} model(s) into base_model; "
                              f"got {n}")

    def recipe_notes(self, params: dict, weights: list[float]) -> list[str]:
        """What a recipe with these (resolved) parameters and model weights should tell the user
        (e.g. that it reduces to another method); recorded in the recipe's notes and model card.
        A wrapping method passes on its inner merge's notes."""
        notes = list(self.notes_fn(params, weights)) if self.notes_fn else []
        if self.wraps:
            inner, inner_params, _ = self.split(params)
            notes += inner.recipe_notes(inner_params, weights)
        return notes

    def __call__(self, base, models, weights=None, **kwargs):
        if weights is None:
            weights = [1.0] * len(models)
        return self.fn(base, models, weights, **kwargs)

    def resolve(self, params: dict, where: str) -> dict:
        """Validate ``params`` against the signature and fill defaults (a wrapping method: its own
        parameters, then the inner method's, in one flat dict)."""
        if self.wraps:
            return self._resolve_wrapped(params, where)
        out = self._resolve_own(params, where)
        if self.check is not None:
            self.check(out, where)
        return out

    def check_model_value(self, params: dict, name: str, value, where: str):
        """One model's value of the per-model parameter ``name`` (:attr:`per_model`), checked as
        the parameter is (a layer schedule too, unless the parameter is ``unscheduled``)."""
        return self.accepts(params)[name].check(value, where, schedules=name not in self.unscheduled)

    def check_resolved(self, params: dict, where: str) -> None:
        """The ``check`` hooks (the inner merge's too) on resolved parameters that may hold
        per-model values (:class:`PerModel`), as a recipe with per-model parameters merges."""
        if self.wraps:
            inner, inner_params, _ = self.split(params)
            inner.check_resolved(inner_params, where)
        if self.check is not None:
            self.check(params, where)

    def accepts(self, params: dict | None = None) -> dict[str, Param]:
        """The parameters a recipe of this method may give, by name: its own, and for a wrapping
        method those of the inner merge ``params`` names (or its default inner merge). An
        unknown inner merge gives the method's own only (:meth:`resolve` names it)."""
        if not self.wraps:
            return dict(self.params)
        try:
            inner = get_method(self.inner_of(params or {}))
        except RecipeError:
            return dict(self.params)
        return {**inner.params, **self.params}

    def per_model_of(self, params: dict | None = None) -> tuple[str, ...]:
        """The parameters each model may give its own value of: the method's, and for a
        wrapping method the inner merge's."""
        if not self.wraps:
            return self.per_model
        try:
            inner = get_method(self.inner_of(params or {}))
        except RecipeError:
            return self.per_model
        return (*self.per_model, *inner.per_model)

    def inner_of(self, params: dict) -> str | None:
        """The merge a wrapping method applies on top of, as ``params`` name it (or its default);
        None for a method that wraps none."""
        return params.get("inner", self.params["inner"].default) if self.wraps else None

    def split(self, params: dict) -> tuple[MergeMethod, dict, dict]:
        """A wrapping method's resolved parameters -> (inner method, its parameters, own ones)."""
        inner = get_method(params["inner"])
        return (inner, {k: v for k, v in params.items() if k not in self.params},
                {k: v for k, v in params.items() if k in self.params})

    def _resolve_wrapped(self, params: dict, where: str) -> dict:
        inner = get_method(self.params["inner"].check(self.inner_of(params), where))
        if inner.wraps or inner.calibrated:
            raise RecipeError(f"{where}: {self.name} cannot wrap '{inner.name}'; the inner merge "
                              "must be a plain method such as ties or task_arithmetic")
        clash = sorted(set(inner.params) & set(self.params))
        if clash:  # a registry bug, not a user error
            raise TypeError(f"{self.name} and {inner.name} both have a parameter '{clash[0]}'")
        own = self._resolve_own({k: v for k, v in params.items() if k in self.params}, where)
        rest = {k: v for k, v in params.items() if k not in self.params}
        unknown = sorted(set(rest) - set(inner.params))
        if unknown:
            raise RecipeError(
                f"{where}: unknown parameter '{unknown[0]}' for method '{self.name}' wrapping "
                f"'{inner.name}'; valid parameters: {', '.join(self.params)} (its own) and "
                f"{', '.join(inner.params) or 'none'} ({inner.name}'s)")
        out = {**own, "inner": inner.name, **inner.resolve(rest, f"{where} ({inner.name})")}
        if self.check is not None:
            self.check(out, where)
        return out

    def _resolve_own(self, params: dict, where: str) -> dict:
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            valid = ", ".join(self.params) or "none"
            raise RecipeError(
                f"{where}: unknown parameter '{unknown[0]}' for method '{self.name}'; "
                f"valid parameters: {valid}"
            )
        return {n: p.check(params[n], where, schedules=n not in self.unscheduled)
                if n in params else p.default for n, p in self.params.items()}


_REGISTRY: dict[str, MergeMethod] = {}
_ALIASES: dict[str, str] = {}


def _is_state(hint) -> bool:
    return (typing.get_origin(hint) is typing.Annotated
            and any(isinstance(m, _StateMarker) for m in typing.get_args(hint)[1:]))


def _param_from(p: inspect.Parameter, hints: dict, fn_name: str) -> Param:
    if p.default is inspect.Parameter.empty:
        raise TypeError(f"merge method {fn_name}: parameter '{p.name}' needs a default")
    hint = hints.get(p.name)
    rng, help_, search, mk = None, "", None, None
    if typing.get_origin(hint) is typing.Annotated:
        hint, *meta = typing.get_args(hint)
        for m in meta:
            if isinstance(m, Range):
                rng = m
            elif isinstance(m, Search):
                search = m
            elif isinstance(m, MergekitName):
                mk = m
            elif isinstance(m, str):
                help_ = m
    choices = None
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        hint = type(choices[0])
    if hint not in (float, int, bool, str):
        raise TypeError(f"merge method {fn_name}: parameter '{p.name}' has unsupported type {hint}")
    if search is not None and (hint not in (float, int) or rng is not None and (
            (rng.lo is not None and search.lo < rng.lo) or (rng.hi is not None and search.hi > rng.hi))):
        raise TypeError(f"merge method {fn_name}: parameter '{p.name}': {search} must lie in its "
                        f"range {rng} and the parameter must be a number")
    param = Param(p.name, hint, p.default, choices, rng, help_, search, mk)
    param.check(p.default, f"merge method {fn_name} (default)")
    return param


def _declared(fn: Callable, name: str, wraps: bool, per_model: tuple, prepare) -> tuple[dict, list]:
    """(parameters, State arguments) of method ``name`` from its signature, checked against what
    its registration says (a wrapping method's ``inner``, ``per_model``, a ``prepare`` hook)."""
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    ps = list(sig.parameters.values())
    if [p.name for p in ps[:3]] != ["base", "models", "weights"]:
        raise TypeError(f"merge method {name}: signature must start (base, models, weights, *, ...)")
    params, state_args = {}, []
    for p in ps[3:]:
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"merge method {name}: '{p.name}' must be keyword-only")
        if _is_state(hints.get(p.name)):
            state_args.append(p.name)
        else:
            params[p.name] = _param_from(p, hints, name)
    if wraps and ("inner" not in params or "merged" not in state_args):
        raise TypeError(f"merge method {name}: a wrapping method needs a parameter 'inner' "
                        "and the State argument 'merged'")
    bad = [p for p in per_model if p not in params or params[p].type is not float]
    if bad:
        raise TypeError(f"merge method {name}: per_model names '{bad[0]}', which is not one "
                        "of its float parameters")
    if state_args and prepare is None and state_args != ["merged"]:
        raise TypeError(f"merge method {name}: State arguments {state_args} need a prepare "
                        "hook that fills them")
    return params, state_args


def merge_method(name: str, *, paper: str, title: str = "", aliases: tuple[str, ...] = (),
                 elementwise: bool = True, wraps: bool = False, prepare: Callable | None = None,
                 check: Callable | None = None, calibrated: bool = False,
                 notes: Callable[[dict, list[float]], list[str]] | None = None,
                 n_models: tuple[int, int | None] = (1, None), unscheduled: tuple[str, ...] = (),
                 per_model: tuple[str, ...] = (), stacks: bool = False, mergekit: Mergekit | None = None,
                 layer_coefficients: Callable[[list[str], dict], dict[str, float]] | None = None,
                 coefficient_label: str = "",
                 calibration_set: Callable[[str, str, int, int], dict] | None = None
                 ) -> Callable[[Callable], Callable]:
    """Register ``fn`` as merge method ``name``; its signature is checked and becomes the schema.

    ``elementwise=False``: the engine hands the method whole tensors (SVD methods).
    ``wraps``, ``prepare``, ``check``, ``calibrated``: see the module docstring.
    ``notes(params, weights)``: notes a recipe of this method records (see ``recipe_notes``).
    ``n_models``: (fewest, most or None) models merged into the base.
    ``unscheduled``: float parameters that may not be layer schedules (a ``prepare`` hook or ``check``
    reads them once for the whole merge); every other float parameter may be one.
    ``per_model``: float parameters each model may give (``models[i].parameters``), as mergekit's
    per-model parameters; the method then receives a :class:`PerModel` of the values (read with
    :func:`model_value`) wherever it would receive one value.
    ``stacks``: the method stacks layers (mergekit's ``passthrough``): its recipe gives
    ``slices`` of one source each, whose layers the output takes in order; the method gets each
    tensor of the source as ``base`` (no models).
    ``mergekit``: what a mergekit recipe of the method says beyond its parameters (:class:`Mergekit`).
    ``layer_coefficients(paths, params)``: for a method that scales the task vector per layer
    group, the coefficient of each group (``paths``: base first; ``params`` resolved), shown by
    ``coefficient_label`` (e.g. "ACM (scale·c)") in the per-layer table and figure.
    ``calibration_set(source, parts, samples, seed)``: for a method that calibrates on texts, the
    parameters that pick that calibration set (what a calibration sweep varies).
    """

    def decorate(fn: Callable) -> Callable:
        params, state_args = _declared(fn, name, wraps, per_model, prepare)
        doc_title = title or (inspect.getdoc(fn) or name).splitlines()[0]
        method = MergeMethod(name, fn, paper, doc_title, params, tuple(state_args), tuple(aliases),
                             elementwise, wraps, prepare, check, calibrated, notes, n_models,
                             tuple(unscheduled), tuple(per_model), stacks, mergekit or Mergekit(),
                             layer_coefficients,
                             coefficient_label or name, calibration_set)
        for key in (name, *aliases):
            if key in _REGISTRY or key in _ALIASES:
                raise TypeError(f"merge method name '{key}' registered twice")
        _REGISTRY[name] = method
        for a in aliases:
            _ALIASES[a] = name
        return fn

    return decorate


def get_method(name: str) -> MergeMethod:
    """The method called ``name`` (or an alias of it); the error lists what is available.
    (The built-in families register when ``l2s_kit.merging`` is imported.)"""
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise RecipeError(
            f"unknown merge method '{name}'; available: {', '.join(sorted(_REGISTRY))}"
            + (f" (aliases: {', '.join(sorted(_ALIASES))})" if _ALIASES else "")
        )
    return _REGISTRY[key]


def list_methods() -> list[MergeMethod]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def methods_table() -> str:
    """Every method as a Markdown table row, from the registry (the methods table of
    docs/methods.md, printed by ``l2s methods --markdown``; a test keeps the two equal)."""
    lines = ["| method | parameters (default) | models merged into the base | paper |",
             "|---|---|---|---|"]
    for m in list_methods():
        name = f"`{m.name}`" + (f" ({', '.join(f'`{a}`' for a in m.aliases)})" if m.aliases else "")
        params = []
        for p in m.params.values():
            extra = [f"one of {' / '.join(f'`{c}`' for c in p.choices)}"] if p.choices else []
            if p.name in m.per_model:
                extra.append("per model")
            default = f"`{p.default!r}`" if p.default is not None else "none"
            params.append(f"`{p.name}` ({', '.join([default, *extra])})"
                          + (f": {_cell(p.help)}" if p.help else ""))
        if m.wraps:
            params.append("and the parameters of the inner merge")
        lo, hi = m.n_models
        models = str(lo) if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
        lines.append(f"| {name} | {'; '.join(params) or 'none'} | {models} | "
                     f"[{_cell(m.title)}]({m.paper}) |")
    return "\n".join(lines) + "\n"

