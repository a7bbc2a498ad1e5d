"""What a study runs on: a System 1 / System 2 pair, the problems (split into validation and
test), how each model is prompted, the generation settings, the answer extractor and the grader.

>>> s = study_setup()                                   # the built-in family (the default)
>>> s = study_setup(base="/models/Qwen2.5-Math-1.5B", model="/models/DeepSeek-R1-Distill-Qwen-1.5B",
...                 benchmark="math500", data_dir="/data/qwen25-math/data", validation=100,
...                 max_new_tokens="8k", device="cuda")
>>> s.rows("test", "system1")[0]["prompt"]              # few-shot for the base System 1

Every study, explorer and notebook takes one of these, so each analysis runs on any pair; the
family is just the pair used when none is given. The data:

- **the family** (no pair and no data given): the task's validation and test splits
  (``n_per_level`` problems per level each), the family's own prompts, settings, extractor.
- **a benchmark** (``benchmark`` + ``data_dir``, the Qwen2.5-Math toolkit's layout): its
  ``test.jsonl``, split into validation and test (``validation``: a number of problems, chosen
  by a seeded split stratified by level where the data has levels, or a file of rows in the
  benchmark's layout). ``limit`` first keeps a stratified subset, for quick runs. The benchmark
  ``l2s_family`` (written by ``l2s zoo export``) is the family's task, evaluated as the family
  is. Any other benchmark is prompted as the paper did: few-shot for the base System 1, the
  Qwen2.5-Math chain-of-thought chat prompt for System 2 and the merges (``prompts``
  overrides), graded by math-verify.
- **rows** (a ``.jsonl`` of ``id``, ``prompt``, ``gold``, optional ``level`` and ``dataset``):
  used as they are for every model, split as a benchmark is.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from l2s_kit.evaluate import (
    FAMILY_BENCHMARK,
    GenerationSettings,
    answer_candidates,
    extract_answer,
    extract_labelled,
    family_format,
    get_prompt,
    load_benchmark,
    load_rows,
    render_prompt,
)
from l2s_kit.io import seeds
from l2s_kit.io.shared import shown_path
from l2s_kit.study.spec import SetupError, StudySpec

SPLITS = ("validation", "test")
ROLES = ("system1", "system2")  # merges are prompted as System 2
REFERENCE = "system2"  # what every merge is compared with
# The paper's prompts: few-shot for the base System 1, the Qwen2.5-Math CoT chat prompt for the rest
PAPER_PROMPTS = {"system1": "fewshot", "system2": "qwen25-math-cot"}
PAIR_MAX_NEW_TOKENS = 8192  # the paper's 8K limit


@dataclass
class StudySetup:
    """See the module docstring. ``data``: split → rows (each with ``split``; ``question`` when
    the prompt is rendered per model); ``prompts``: role → prompt template (None: the rows'
    own ``prompt``); ``settings``: role → generation settings."""

    system1: Path
    system2: Path
    data: dict[str, list[dict]]
    prompts: dict[str, str | None]
    settings: dict[str, GenerationSettings]
    extract: Callable = extract_answer
    candidates: Callable = answer_candidates  # answers stated on the way: where the length goes
    grader: str = "simple"
    name: str = "pair"                 # the folder of this setup's runs under a workdir
    title: str = "a System 1 / System 2 pair"
    family: object | None = None       # the zoo Family when this is the built-in family
    backend: str = "transformers"
    device: str = "cpu"
    tensor_parallel: int = 1

    @property
    def has_levels(self) -> bool:
        """Whether every row has a difficulty level (else views by level become views by dataset)."""
        rows = [r for split in self.data.values() for r in split]
        return bool(rows) and all(r.get("level") is not None for r in rows)

    def role(self, model: str) -> str:
        return "system1" if model == "system1" else "system2"

    def rows(self, split: str, role: str = "system2") -> list[dict]:
        """The rows of ``split`` with prompts rendered for ``role`` ("system1"; "system2" and
        merges)."""
        if split not in self.data:
            raise SetupError(f"split {split!r} is not one of {list(self.data)}")
        template = self.prompts[self.role(role)]
        if template is None:
            return [dict(r) for r in self.data[split]]
        return [{**r, "prompt": render_prompt(template, r["question"])} for r in self.data[split]]

    def settings_for(self, role: str) -> GenerationSettings:
        return self.settings[self.role(role)]

    def fingerprints(self) -> dict[str, str]:
        """What a run on this setup read, for its run record: System 1's and System 2's
        weights hashes and the content hash of the data (both splits, as held here)."""
        from l2s_kit.io.identity import checkpoint_hash
        from l2s_kit.io.runs import rows_fingerprint

        return {"system1": f"weights:{checkpoint_hash(self.system1)}",
                "system2": f"weights:{checkpoint_hash(self.system2)}",
                "data": rows_fingerprint(r for split in sorted(self.data)
                                         for r in self.data[split])}


def family_setup(family=None, n_per_level: int = 100, *, family_root: str | os.PathLike | None = None,
                 device: str = "cpu", max_new_tokens: int | str | None = None,
                 progress: bool = True) -> StudySetup:
    """The built-in family (built on first use) on its task's validation and test splits."""
    from l2s_kit.zoo import build_family

    family = family or build_family(family_root, progress=progress)
    data = {split: family.rows(split, n_per_level) for split in SPLITS}
    settings, fmt = _family_settings(max_new_tokens), family_format()
    return StudySetup(family.system1, family.system2, data, {"system1": None, "system2": None},
                      {"system1": settings, "system2": settings}, extract=fmt.extract,
                      candidates=fmt.candidates, grader=fmt.grader, name=family.root.name,
                      title=f"the built-in family ({family.root.name})", family=family,
                      device=device)


def _family_settings(max_new_tokens) -> GenerationSettings:
    settings = family_format().settings
    return settings if max_new_tokens in (None, "") else replace(settings,
                                                                  max_new_tokens=max_new_tokens)


def _checkpoint(value, name: str) -> Path:
    """A checkpoint folder given as a path or a hub id (its snapshot in the hub cache)."""
    from l2s_kit.io.hub import resolve_checkpoint

    path = Path(os.path.expanduser(resolve_checkpoint(str(value), name)))
    if not path.exists():
        raise SetupError(f"{name}: {path} does not exist; give a local checkpoint folder or a "
                         "hub id (owner/name)")
    if not (path / "config.json").is_file():
        raise SetupError(f"{name}: {path} is not a checkpoint folder (no config.json)")
    return path


def stratified_sample(rows: list[dict], n: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(``n`` rows chosen at random, stratified by level; the rest), each in the rows' order.
    Each level gets its share of ``n`` (largest remainders); rows without a level are one
    stratum."""
    if n >= len(rows):
        return list(rows), []
    groups: dict = {}
    for i, r in enumerate(rows):
        groups.setdefault(r.get("level"), []).append(i)
    quotas = {k: n * len(v) / len(rows) for k, v in groups.items()}
    take = {k: int(q) for k, q in quotas.items()}
    for k in sorted(groups, key=lambda k: (-(quotas[k] - take[k]), str(k)))[:n - sum(take.values())]:
        take[k] += 1
    rng = seeds.rng("stratified", seed)
    chosen = set()
    for k in sorted(groups, key=str):
        idx = list(groups[k])
        rng.shuffle(idx)
        chosen.update(idx[:take[k]])
    return ([r for i, r in enumerate(rows) if i in chosen],
            [r for i, r in enumerate(rows) if i not in chosen])


def _prompts(prompts: dict | None, benchmark: str | None, family_data: bool) -> dict:
    """The prompt template of each role (None: the rows' own prompts), checked."""
    if family_data:
        used = {"system1": None, "system2": None}
    elif benchmark is not None:
        used = {**PAPER_PROMPTS, **(prompts or {})}
    else:
        used = {"system1": None, "system2": None, **(prompts or {})}
    for role, template in used.items():
        if role not in ROLES:
            raise SetupError(f"prompts: unknown role {role!r}; roles: {', '.join(ROLES)}")
        if template is not None:
            try:
                if get_prompt(template).needs_tokenizer:
                    raise SetupError(f"prompt of {role}: 'chat' depends on each model's tokenizer; "
                                     "use qwen25-math-cot or fewshot")
            except (ValueError, KeyError) as e:
                raise SetupError(f"prompt of {role}: {e}") from None
            if benchmark is None:
                raise SetupError(f"prompt of {role}: rows files carry their prompts; a template "
                                 "applies to a benchmark's questions")
    return used


def _split(all_rows: list[dict], validation, limit: int | None, seed: int,
           benchmark: str | None) -> tuple[list[dict], list[dict]]:
    """(validation rows, test rows): ``limit`` problems at most (stratified by level), then a
    seeded stratified split of ``validation`` problems, or a separate validation file that shares
    no problem with the test rows."""
    if limit is not None:
        all_rows, _ = stratified_sample(all_rows, int(limit), seed)
    if isinstance(validation, (str, os.PathLike)) and not str(validation).isdigit():
        val = Path(os.path.expanduser(str(validation)))
        if not val.is_file():
            raise SetupError(f"validation: {val} does not exist; give a number of problems or a "
                             "file of validation rows")
        in_layout = benchmark is not None and val.suffix == ".jsonl" and val.parent.name == benchmark
        val_rows = (load_benchmark(benchmark, val.parent.parent, prompt=None, split=val.stem)
                    if in_layout else load_rows(val))
        test_rows = all_rows
        shared = {(str(r.get("dataset")), str(r["id"])) for r in val_rows} & \
            {(str(r.get("dataset")), str(r["id"])) for r in test_rows}
        if shared:
            raise SetupError(f"validation: {val} shares {len(shared)} problem ids with the test "
                             f"data (e.g. {sorted(shared)[0][1]!r}); choosing on test problems "
                             "would leak them")
    else:
        n_val = int(validation) if validation is not None else max(1, round(0.2 * len(all_rows)))
        if n_val >= len(all_rows):
            raise SetupError(f"validation: {n_val} problems leave none to report on "
                             f"({len(all_rows)} in all); give fewer")
        val_rows, test_rows = stratified_sample(all_rows, n_val, seed)
    return val_rows, test_rows


def pair_setup(base, model, *, benchmark: str | None = None, data_dir=None, rows=None,
               validation: int | str | os.PathLike | None = None, limit: int | None = None,
               seed: int = 0, prompts: dict | None = None, max_new_tokens: int | str | None = None,
               grader: str | None = None, backend: str = "transformers", device: str = "cpu",
               tensor_parallel: int = 1, batch_size: int | None = None) -> StudySetup:
    """A researcher's pair (see the module docstring), as a checked :class:`StudySpec` gives it
    (:func:`build_setup`): the checkpoints and the data are checked here, naming them, before
    anything is loaded."""
    s1, s2 = _checkpoint(base, "base (System 1)"), _checkpoint(model, "model (System 2)")
    if s1.resolve() == s2.resolve():
        raise SetupError(f"base and model are the same folder ({s1}); give System 1 and System 2")
    if (benchmark is None) == (rows is None):
        both = ", not both" if benchmark is not None else ""
        raise SetupError(f"give the data: benchmark (with data_dir) or rows (a .jsonl file){both}")
    family_data = benchmark == FAMILY_BENCHMARK
    if benchmark is not None:
        if data_dir in (None, ""):
            raise SetupError(f"benchmark {benchmark!r} needs data_dir (the folder holding "
                             f"{benchmark}/test.jsonl)")
        if not Path(data_dir).is_dir():
            raise SetupError(f"data_dir: {data_dir} does not exist")
        all_rows = load_benchmark(benchmark, data_dir, prompt=None)
        title = f"{benchmark} ({shown_path(data_dir)})"  # shown in shared pages: no home path
    else:
        all_rows = load_rows(rows)
        title = Path(rows).name

    used = _prompts(prompts, benchmark, family_data)
    val_rows, test_rows = _split(all_rows, validation, limit, seed, benchmark)
    data = {"validation": [{**r, "split": "validation"} for r in val_rows],
            "test": [{**r, "split": "test"} for r in test_rows]}

    if family_data:
        one = _family_settings(max_new_tokens)
        settings = {role: one for role in used}
        fmt = family_format()  # read as the built-in study reads the family's task
        extract, default_grader, candidates = fmt.extract, fmt.grader, fmt.candidates
    else:
        candidates = answer_candidates
        n = max_new_tokens if max_new_tokens not in (None, "") else PAIR_MAX_NEW_TOKENS
        settings = {role: GenerationSettings(max_new_tokens=n, stop=get_prompt(t).stop if t else ())
                    for role, t in used.items()}
        extract = extract_labelled if benchmark is not None else extract_answer
        default_grader = "math-verify"
    if batch_size is not None:
        settings = {k: replace(v, batch_size=int(batch_size)) for k, v in settings.items()}
    key = hashlib.sha256(f"{s1.resolve()}|{s2.resolve()}".encode()).hexdigest()[:8]
    return StudySetup(s1, s2, data, used, settings, extract=extract, candidates=candidates,
                      grader=grader or default_grader, name=f"{s1.name}+{s2.name}-{key}",
                      title=title, backend=backend, device=device,
                      tensor_parallel=int(tensor_parallel))


def study_setup(base=None, model=None, *, benchmark: str | None = None, data_dir=None, rows=None,
                family_root=None, n_per_level: int = 100, device: str = "cpu",
                max_new_tokens=None, progress: bool = True, **kwargs) -> StudySetup:
    """The setup of the :class:`StudySpec` these keywords make (Python's face of a study's pair
    and data): the built-in family when no pair and no data are given, else the pair's. Empty
    strings count as not given (as notebook parameters are)."""
    spec = StudySpec(base=base, model=model, benchmark=benchmark, data_dir=data_dir, rows=rows,
                     family_root=family_root, n_per_level=n_per_level, device=device,
                     max_new_tokens=max_new_tokens, **kwargs)
    return build_setup(spec, progress)


def build_setup(spec: StudySpec, progress: bool = True) -> StudySetup:
    """The setup ``spec`` describes (already checked): the family's or the pair's data loaded and
    split, prompts, settings and grader."""
    if spec.is_family:
        return family_setup(n_per_level=spec.n_per_level, family_root=spec.family_root,
                            device=spec.device, max_new_tokens=spec.max_new_tokens,
                            progress=progress)
    return pair_setup(spec.base, spec.model, benchmark=spec.benchmark, data_dir=spec.data_dir,
                      rows=spec.rows, validation=spec.validation, limit=spec.limit,
                      seed=spec.seed, prompts=spec.prompts, max_new_tokens=spec.max_new_tokens,
                      grader=spec.grader, backend=spec.backend, device=spec.device,
                      tensor_parallel=spec.tensor_parallel, batch_size=spec.batch_size)
