"""An evaluation's specification: one checkpoint on one set of problems, as a frozen, typed object.

``l2s eval`` builds one from its flags and Python builds one from keywords; it is checked once,
when it is made (errors name the option), and handed down whole to :func:`run_eval`::

    >>> spec = EvalSpec.from_options(model="merged/", out="responses.jsonl",
    ...                              benchmarks=["math500"], data_dir="data/", max_new_tokens="8k")
    >>> spec.settings.max_new_tokens, spec.grader.name, spec.settings.stop
    (8192, 'math-verify', ('<|im_end|>', '<|endoftext|>'))

The data's defaults are settled here: a benchmark that carries its own prompt and answer format
(the family's task) takes its settings, extractor and grader; another is rendered with a prompt
template (``qwen25-math-cot`` by default) whose stop strings it takes; a rows file is graded with
the ``simple`` grader unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from l2s_kit.errors import L2SError
from l2s_kit.evaluate.backends import GenerationSettings
from l2s_kit.evaluate.grading import Grader
from l2s_kit.io.choices import BACKENDS

SAMPLING = ("max_new_tokens", "temperature", "top_p", "n", "seed", "batch_size")
DEFAULT_PROMPT = "qwen25-math-cot"


class EvalSpecError(L2SError, ValueError):
    """An evaluation's options cannot be used together (names the option)."""


@dataclass(frozen=True)
class EvalSpec:
    """See the module docstring; build it with :meth:`from_options`."""

    model: str                          # checkpoint folder
    out: str                            # responses.jsonl (appended to, resumed)
    data: str | None = None             # a .jsonl of rows (id, prompt, gold[, dataset, level])
    benchmarks: tuple[str, ...] = ()    # or benchmarks in data_dir
    data_dir: str | None = None
    prompt: str | None = None           # the template a benchmark is rendered with
    limit: int | None = None            # first N problems of each benchmark
    own_format: bool = False            # the benchmark carries its prompt and answer format
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    grader: Grader = field(default_factory=Grader)
    ks: tuple[int, ...] | None = None   # pass@k and maj@k reported for these k
    after_think: bool = True            # the answer is read after a closed </think>
    backend: str = "transformers"
    device: str = "cpu"
    tensor_parallel: int = 1
    model_name: str | None = None

    @classmethod
    def from_options(cls, *, model: str | os.PathLike, out: str | os.PathLike,
                     data: str | os.PathLike | None = None,
                     benchmarks: Sequence[str] | str | None = None,
                     data_dir: str | os.PathLike | None = None, prompt: str | None = None,
                     limit: int | None = None, stop: Sequence[str] | None = None,
                     grader: str | None = None, grade_timeout: float = 5.0,
                     ks: Sequence[int] | None = None, whole_response: bool = False,
                     backend: str = "transformers", device: str = "cpu",
                     tensor_parallel: int = 1, model_name: str | None = None,
                     **sampling) -> EvalSpec:
        """The spec of what a user gave (None: the data's default); ``sampling``: the
        :class:`GenerationSettings` fields (``max_new_tokens`` as a number or "8k")."""
        from l2s_kit.evaluate.benchmarks import family_format, own_format
        from l2s_kit.evaluate.prompts import get_prompt

        unknown = set(sampling) - set(SAMPLING)
        if unknown:
            raise EvalSpecError(f"unknown evaluation option {sorted(unknown)[0]!r}; the "
                                f"generation options are {', '.join(SAMPLING)}")
        benchmarks = (benchmarks,) if isinstance(benchmarks, str) else tuple(benchmarks or ())
        if bool(data) == bool(benchmarks):
            raise EvalSpecError("give either --data (a jsonl of rows) or --benchmark NAME "
                                "(with --data-dir)")
        if benchmarks and not data_dir:
            raise EvalSpecError("--benchmark needs --data-dir, the folder holding "
                                "<name>/test.jsonl (the Qwen2.5-Math toolkit's data/ layout)")
        if backend not in BACKENDS:
            raise EvalSpecError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")
        own = bool(benchmarks) and own_format(benchmarks, prompt)
        fmt = family_format() if own else None
        if benchmarks and not own:
            prompt = prompt or DEFAULT_PROMPT
            get_prompt(prompt)  # an unknown template is named now, before any work
        if stop is None:
            stop = get_prompt(prompt).stop if prompt else ()
        given = {k: v for k, v in sampling.items() if v is not None}
        # unset options take the data's defaults; invalid values raise an L2SError naming them
        settings = dataclasses.replace(fmt.settings if own else GenerationSettings(),
                                       stop=tuple(stop), **given)
        ks = tuple(ks) if ks else None
        if ks and max(ks) > settings.n:
            raise EvalSpecError(f"--k {max(ks)} is larger than --n {settings.n}, the samples "
                                f"drawn per problem; ask for k <= {settings.n} or draw more "
                                "with --n")
        if grader is None:  # math-verify for real benchmarks; plain answers otherwise
            grader = fmt.grader if own else "math-verify" if benchmarks else "simple"
        return cls(model=os.fspath(model), out=os.fspath(out),
                   data=os.fspath(data) if data else None, benchmarks=benchmarks,
                   data_dir=os.fspath(data_dir) if data_dir else None, prompt=prompt,
                   limit=limit, own_format=own, settings=settings,
                   grader=Grader(grader, grade_timeout, extract=fmt.extract if own else None),
                   ks=ks, after_think=not whole_response, backend=backend, device=device,
                   tensor_parallel=tensor_parallel, model_name=model_name)

    @property
    def candidates(self):
        """The family's answer finder for "tokens after the answer" (None: the generic one)."""
        from l2s_kit.evaluate.benchmarks import family_format

        return family_format().candidates if self.own_format else None

    def rows(self) -> list[dict]:
        """The problems, rendered with the prompt template (its tokenizer loaded when it
        needs one)."""
        from l2s_kit.evaluate.benchmarks import load_benchmarks
        from l2s_kit.evaluate.prompts import get_prompt
        from l2s_kit.evaluate.run import load_rows

        if self.data:
            return load_rows(self.data)
        tokenizer = None
        if self.prompt and get_prompt(self.prompt).needs_tokenizer:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model)
        return load_benchmarks(self.benchmarks, self.data_dir, prompt=self.prompt,
                               tokenizer=tokenizer, limit=self.limit)

    def to_dict(self) -> dict:
        """The spec's JSON form (settings and grader by their recorded fields)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["benchmarks"] = list(self.benchmarks)
        out["ks"] = list(self.ks) if self.ks else None
        out["settings"] = {**dataclasses.asdict(self.settings),
                           "stop": list(self.settings.stop)}
        out["grader"] = {"name": self.grader.name, "timeout": self.grader.timeout}
        return out


def run_eval(spec: EvalSpec, *, progress: bool = True):
    """Generate, grade and append ``spec``'s responses to ``spec.out``; the responses frame and
    the math-verify grader's report (None for the simple grader)."""
    from l2s_kit.evaluate.grading import MathGrader
    from l2s_kit.evaluate.run import evaluate

    backend = None
    if spec.backend == "vllm":
        from l2s_kit.evaluate.vllm_backend import VLLMBackend

        backend = VLLMBackend(spec.model, tensor_parallel_size=spec.tensor_parallel,
                              progress=progress)
    rows = spec.rows()
    with spec.grader.open() as grade:
        df = evaluate(spec.model, rows, spec.out, backend=backend, settings=spec.settings,
                      model_name=spec.model_name, progress=progress, device=spec.device,
                      extract=spec.grader.extractor, grader=grade,
                      after_think=spec.after_think)
        report = grade.report() if isinstance(grade, MathGrader) else None
    return df, report
