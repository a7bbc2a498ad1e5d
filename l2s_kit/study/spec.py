"""A study's specification: what a study is asked to do, as one frozen, typed object.

Every face builds one and nothing else: the command line (``l2s study``), a YAML file
(``l2s study --config study.yaml``), the study notebook's parameters and Python keywords::

    >>> spec = StudySpec(base="/models/Qwen2.5-Math-1.5B", model="/models/R1-Distill-1.5B",
    ...                  benchmark="math500", data_dir="/data", validation=100, max_new_tokens="8k")
    >>> spec.max_new_tokens
    8192

It is checked once, when it is made (errors name the field), and handed down whole to
:func:`l2s_kit.study.run_study`; its JSON form (:meth:`StudySpec.to_dict`) is what the run record
stores, so ``StudySpec.from_dict(record["parameters"])`` rebuilds the same study.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from l2s_kit.errors import L2SError
from l2s_kit.io.choices import BACKENDS, GRADERS, MERGE_IN, RUNNERS


class SetupError(L2SError, ValueError):
    """A study's specification, pair, data or settings cannot be used (names the field)."""


SpecError = SetupError  # one error for what a study is given, wherever it is checked


PAIR_DATA = ("validation", "limit", "prompts", "grader")  # what only a pair's data takes


@dataclass(frozen=True)
class StudySpec:
    """See the module docstring. A pair (``base``, ``model``: folders or hub ids) with its data
    (``benchmark`` in ``data_dir``, or ``rows``); neither: the built-in family
    (``family_root``: where it is built, None: the shipped one; ``n_per_level`` problems per
    level and split)."""

    # -- the pair and its data (no pair: the built-in family) --------------------------------
    base: str | None = None            # System 1 checkpoint folder or hub id
    model: str | None = None           # System 2 checkpoint folder or hub id
    benchmark: str | None = None       # a benchmark in the Qwen2.5-Math toolkit layout
    data_dir: str | None = None        # the folder holding <benchmark>/test.jsonl
    rows: str | None = None            # or a .jsonl of rows (id, prompt, gold[, level])
    validation: int | str | None = None  # problems for choosing settings, or a file of them
    limit: int | None = None           # keep this many problems (stratified by level)
    seed: int = 0                      # seed of the splits
    prompts: dict | None = None        # role (system1, system2) -> prompt template
    grader: str | None = None          # simple, math-verify, reference (default: the data's)
    family_root: str | None = None     # the family built (or reused) here; None: the shipped one
    n_per_level: int = 100             # the family's problems per level and split
    # -- generation ------------------------------------------------------------------------
    max_new_tokens: int | None = None  # None: the data's default; a number, "8k" or "10k"
    n: int = 1                         # samples per problem (more needs temperature > 0)
    temperature: float = 0.0           # 0: greedy
    top_p: float = 1.0                 # nucleus sampling mass
    ks: tuple[int, ...] | None = None  # pass@k and maj@k for these k ("1,4" taken)
    batch_size: int | None = None      # prompts per generate call (None: the data's default)
    # -- the merges and the choice -----------------------------------------------------------
    grid: tuple | None = None          # ((method, {parameter: value}), ...); None: the default
    tolerance: float = 3.0             # accuracy points below System 2 a chosen merge may lose
    # -- where and how -----------------------------------------------------------------------
    workdir: str = "data/runs/study"   # merges and responses (reused by later runs)
    out: str | None = None             # tables and figures (None: figures/study[-<pair>])
    png: bool = False                  # also PNG figures (kaleido + Chromium)
    backend: str = "transformers"      # or vllm
    device: str = "cpu"                # cpu, cuda, cuda:N
    tensor_parallel: int = 1           # GPUs per vLLM model
    runner: str = "local"              # or ray: one Ray task per model
    merge_in: str = "auto"             # memory, disk, auto
    num_gpus: float = 0                # GPUs per Ray task
    ray_address: str | None = None     # a running Ray cluster
    _given: frozenset = field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self):
        put = object.__setattr__
        for f in fields(self):
            if f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, str) and not value.strip() and f.name in _OPTIONAL_TEXT:
                put(self, f.name, None)  # a notebook's "" is "not given"
        for name in ("base", "model", "benchmark", "data_dir", "rows", "family_root", "out",
                     "workdir", "ray_address"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                put(self, name, str(value))
            elif value is not None and not isinstance(value, str):
                raise SpecError(f"{name}: a path or a name, got {value!r}")
        self._check_numbers(put)
        self._check_choices()
        self._check_pair()
        if self.grid is not None:
            put(self, "grid", _grid(self.grid))
        if self.prompts is not None and not isinstance(self.prompts, dict):
            raise SpecError(f"prompts: a mapping of role (system1, system2) to a prompt, got "
                            f"{self.prompts!r}")

    def _check_numbers(self, put) -> None:
        from l2s_kit.analysis.sampling import parse_k
        from l2s_kit.evaluate import GenerationSettings

        for name in ("n", "limit", "n_per_level", "tensor_parallel", "batch_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise SpecError(f"{name}: a whole number of at least 1, got {v!r}")
        if isinstance(self.validation, str) and self.validation.strip().isdigit():
            put(self, "validation", int(self.validation))
        if isinstance(self.validation, int) and (isinstance(self.validation, bool)
                                                 or self.validation < 1):
            raise SpecError(f"validation: a number of problems (at least 1) or a file, got "
                            f"{self.validation!r}")
        for name in ("temperature", "top_p", "tolerance", "num_gpus"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not math.isfinite(v) or v < 0):
                raise SpecError(f"{name}: a finite number of at least 0, got {v!r}")
        length = {} if self.max_new_tokens is None else {"max_new_tokens": self.max_new_tokens}
        try:  # the length limit parsed, and decoding checked, where every generation setting is
            g = GenerationSettings(n=self.n, temperature=self.temperature, top_p=self.top_p,
                                   **length)
        except L2SError as e:
            raise SpecError(str(e).removeprefix("generation setting ")) from None
        if length:
            put(self, "max_new_tokens", g.max_new_tokens)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise SpecError(f"seed: a whole number, got {self.seed!r}")
        if self.ks is not None:
            try:
                put(self, "ks", tuple(parse_k(self.ks)))
            except L2SError as e:
                raise SpecError(f"ks: {e}") from None
            if max(self.ks) > self.n:
                raise SpecError(f"ks: {max(self.ks)} is larger than n ({self.n}), the samples "
                                "drawn per problem; ask for k <= n or draw more (n)")

    def _check_choices(self) -> None:
        for name, allowed in (("backend", BACKENDS), ("runner", RUNNERS), ("merge_in", MERGE_IN),
                              ("grader", GRADERS)):
            v = getattr(self, name)
            if v is not None and v not in allowed:
                raise SpecError(f"{name}: {v!r} is not one of {', '.join(allowed)}")

    def _check_pair(self) -> None:
        """The flags that go together, checked once: a pair is both or neither; a pair's data
        and its options only with a pair."""
        if self.base is None and self.model is None:
            if self.benchmark is not None or self.rows is not None:
                raise SpecError("data given without a pair: give base (System 1) and model "
                                "(System 2) too, or neither to study the built-in family")
            if self.data_dir is not None:
                raise SpecError("data_dir given without a benchmark: give benchmark too")
            extra = [k for k in (*PAIR_DATA, "batch_size") if getattr(self, k) is not None]
            extra += ["backend"] if self.backend != "transformers" else []
            if extra:
                raise SpecError(f"{', '.join(extra)} applies to a pair's data: give base and "
                                "model (and a benchmark or rows), or leave it unset for the "
                                "built-in family")
        elif self.base is None or self.model is None:
            missing = "base (System 1)" if self.base is None else "model (System 2)"
            raise SpecError(f"{missing} is not given: a pair needs both base and model")

    @property
    def is_family(self) -> bool:
        return self.base is None

    @property
    def sampling(self) -> dict:
        """How every model decodes (``n``, ``temperature``, ``top_p``)."""
        return {k: getattr(self, k) for k in ("n", "temperature", "top_p")}

    @property
    def given(self) -> dict:
        """The fields the face was given (its ``given`` names; every non-default one when built
        from Python)."""
        d = self.to_dict()
        names = self._given or {k for k, v in d.items() if v != _DEFAULTS[k]}
        return {k: v for k, v in d.items() if k in names}

    def to_dict(self) -> dict:
        """The JSON form (what the run record stores)."""
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        d["grid"] = [[m, dict(p)] for m, p in self.grid] if self.grid is not None else None
        d["ks"] = list(self.ks) if self.ks is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "study", given=None) -> StudySpec:
        """A spec from a mapping (a YAML file, a record, notebook parameters); an unknown key is
        named with the known ones. ``given``: the keys the user gave (default: all of ``d``)."""
        if not isinstance(d, dict):
            raise SpecError(f"{where}: a study is a mapping of its settings ({', '.join(_DEFAULTS)})")
        unknown = sorted(set(d) - set(_DEFAULTS))
        if unknown:
            raise SpecError(f"{where}: unknown setting {unknown[0]!r}; settings: "
                            f"{', '.join(_DEFAULTS)}")
        try:
            return cls(**d, _given=frozenset(d if given is None else given))
        except SpecError as e:
            raise SpecError(f"{where}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides) -> StudySpec:
        """A spec from a YAML file; ``overrides`` (the command line's flags) win."""
        from l2s_kit.io.yamlfile import load_mapping

        path = Path(path)
        d = load_mapping(path, "study file", SpecError, "a mapping of settings")
        if isinstance(d.get("grid"), (str, os.PathLike)):  # a grid file next to the study file
            d["grid"] = str(path.resolve().parent / d["grid"]) if not Path(
                d["grid"]).is_absolute() else d["grid"]
        return cls.from_dict({**d, **overrides}, where=str(path), given={*d, *overrides})


def _grid(grid) -> tuple:
    """A grid as ((method, params), ...) from a list, a mapping or a YAML file's path."""
    if isinstance(grid, tuple) and all(isinstance(g, tuple) and len(g) == 2 for g in grid):
        return tuple((str(m), dict(p)) for m, p in grid)
    try:
        return tuple((m, dict(p)) for m, p in load_grid(grid))
    except L2SError as e:
        raise SpecError(f"grid: {e}") from None


def load_grid(source: str | os.PathLike | list | dict) -> list[tuple[str, dict]]:
    """A study grid from a YAML file (or its parsed value): a list of ``[method, {parameter:
    value}]`` merges, or a mapping of method → parameter → list of values (every combination).
    Errors name the file and the entry."""
    import yaml

    from l2s_kit.io.yamlfile import safe_load

    where = "grid"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise SetupError(f"grid file {path} does not exist")
        where = str(path)
        try:
            source = safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise SetupError(f"{where}: not valid YAML ({e})") from None
    if isinstance(source, dict):
        try:
            return param_grid({m: {k: v if isinstance(v, list) else [v] for k, v in (p or {}).items()}
                               for m, p in source.items()})
        except (ValueError, KeyError, AttributeError) as e:
            raise SetupError(f"{where}: {e}") from None
    if not isinstance(source, (list, tuple)) or not source:
        raise SetupError(f"{where}: a grid is a list of [method, {{parameter: value}}] or a "
                         "mapping method → parameter → values")
    out = []
    for i, item in enumerate(source):
        if isinstance(item, str):
            item = [item, {}]
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], dict)):
            raise SetupError(f"{where}: entry {i + 1} ({item!r}) is not [method, {{parameter: "
                             "value}}]")
        try:  # the method and its parameters' names (their values: when its recipe is made)
            out += param_grid({item[0]: {k: [v] for k, v in item[1].items()}})
        except (ValueError, KeyError, L2SError) as e:
            raise SetupError(f"{where}: entry {i + 1}: {e}") from None
    return out


def param_grid(spec: dict[str, dict[str, Sequence]]) -> list[tuple[str, dict]]:
    """Every ``(method, params)`` of the product of each method's value lists:
    ``param_grid({"task_arithmetic": {"alpha": [0.2, 0.5]}, "ties": {"k": [0.8], "alpha": [0.5]}})``
    gives TA at α 0.2 and 0.5, then TIES at (k 0.8, α 0.5). Parameters are checked by name."""
    from l2s_kit.merging import get_method

    out = []
    for m, values in spec.items():
        method = get_method(m)
        names = list(values)
        for combo in itertools.product(*values.values()):
            params = dict(zip(names, combo))
            own = method.accepts(params)  # AIM: its own and this combination's inner merge's
            unknown = [k for k in params if k not in own]
            if unknown:
                inner = f" wrapping {method.inner_of(params)}" if method.wraps else ""
                raise ValueError(f"{m}{inner} has no parameter {', '.join(unknown)}; it takes "
                                 f"{', '.join(own)}")
            out.append((m, params))
    return out


_DEFAULTS = {f.name: f.default for f in fields(StudySpec) if not f.name.startswith("_")}
_OPTIONAL_TEXT = {k for k, v in _DEFAULTS.items() if v is None}
