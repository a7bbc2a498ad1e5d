"""The ``l2s`` command line: merge checkpoints, list methods and presets, evaluate, inspect task-vector
spectra, run the study."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import threading
from pathlib import Path

from l2s_kit.errors import EXIT_FIGURES_INCOMPLETE, L2SError, missing_extra, require
from l2s_kit.io.choices import (
    BACKENDS,
    DTYPES,
    GRADERS,
    MERGE_IN,
    OBJECTIVES,
    RUNNERS,
    SAMPLERS,
    SVD_ALGORITHMS,
)
from l2s_kit.version import __version__

DESCRIPTION = """\
l2s_kit: long-to-short LLM reasoning through model merging.

Merge a quick-thinking (System 1) checkpoint with a slow-thinking (System 2) one by weight
arithmetic, then measure and inspect the result.
"""

EPILOG = """\
examples:
  l2s methods                                     list merge methods and their parameters
  l2s merge recipe.yaml --out merged/             merge as a recipe says
  l2s merge --preset ties-7b --base S1 --model S2 --out merged/
  l2s eval merged/ --data rows.jsonl --out runs/responses.jsonl
                                                  generate, grade and summarize (resumes)
  l2s eval merged/ --benchmark math500 --data-dir data/benchmarks --grader math-verify \\
      --max-new-tokens 8k --out runs/math500.jsonl
  l2s eval merged/ --data rows.jsonl --n 8 --temperature 0.6 --k 1,8 --out runs/sampled.jsonl
                                                  avg@8, pass@1, pass@8 and maj@8
  l2s regrade runs/math500.jsonl --grader reference --out runs/math500-reference.jsonl
                                                  grade saved responses again (a new file)
  l2s spectrum S1 S2 --out spectrum.csv           singular values of the task vector: is
                                                  the pair low-rank enough for SVD merging?
  l2s sweep examples/sweep-7b.yaml --runner ray  merge + evaluate a grid, one Ray task per recipe
  l2s check /models/S1 /models/S2                 does the pair fit together? (every difference)
  l2s study                                       the L2S study on the built-in family
  l2s study --base S1 --model S2 --benchmark math500 --data-dir DATA   ... on your own pair
  l2s zoo build                                   train the built-in System 1 / System 2 pair
  l2s notebooks run -f notebooks/params/smoke.yaml --run smoke
                                                  run every notebook headless, render HTML + PNG

exit status: 0 done; 2 bad input or a missing extra (one line says what to do); 3 figures
incomplete (l2s study --png: every table and HTML figure written, some PNGs missing; the
command that makes them again is printed); 130 interrupted.
"""


def _merge(args) -> int:
    from l2s_kit.merging import load_recipe, merge

    if args.recipe and (args.preset or args.method):
        raise L2SError("give either a recipe file or --preset/--method, not both")
    params = {}
    for kv in args.param or []:
        key, eq, val = kv.partition("=")
        if not eq:
            raise L2SError(f"--param {kv!r}: write it as NAME=VALUE, e.g. --param alpha=0.7")
        if key in params:
            raise L2SError(f"--param {key} is given twice ({key}={params[key]!r} and {kv}); "
                           "give each parameter once")
        params[key] = _yaml_value(f"--param {kv}", val)
    if args.recipe:
        recipe = load_recipe(args.recipe)
    elif (args.preset or args.method) and args.base and args.model:
        recipe = load_recipe({"base_model": args.base, "models": [{"model": m} for m in args.model],
                              **({"preset": args.preset} if args.preset else {}),
                              **({"merge_method": args.method} if args.method else {}),
                              "parameters": params})
        params = {}
    else:
        raise L2SError("give a recipe file, or --preset/--method with --base and --model "
                       "(see `l2s merge --help`)")
    if params or args.out_dtype or args.tokenizer_source:
        d = (recipe.with_parameters(**params) if params else recipe).to_dict()
        d["out_dtype"] = args.out_dtype or d["out_dtype"]
        d["tokenizer_source"] = args.tokenizer_source or d["tokenizer_source"]
        new = load_recipe(d)
        stale = recipe.method.recipe_notes(recipe.parameters, recipe.weights)
        kept = [n for n in recipe.notes if n not in stale]  # preset / translation notes
        recipe = dataclasses.replace(new, notes=list(dict.fromkeys(kept + new.notes)))
    for note in recipe.notes:
        print(f"note: {note}", file=sys.stderr)
    out = merge(recipe, args.out, overwrite=args.overwrite, shard_size=args.shard_size,
                device=args.device, progress=not args.quiet, force=args.force)
    for note in out.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"merged {recipe.merge_method} -> {out}")
    print(f"weights hash {out.weights_hash}")
    return 0


def _methods(args) -> int:
    from l2s_kit.merging import PRESETS, list_methods, methods_table

    if args.markdown:
        print(methods_table(), end="")
        return 0
    for m in list_methods():
        aliases = f" (aliases: {', '.join(m.aliases)})" if m.aliases else ""
        print(f"{m.name}{aliases}\n    {m.title}\n    {m.paper}")
        for p in m.params.values():
            extra = (f" one of {list(p.choices)}" if p.choices else
                     f" in {p.range}" if p.range else "")
            print(f"    {p.name}: {p.type.__name__} = {p.default!r}{extra}"
                  + (f"  ({p.help})" if p.help else ""))
        if m.wraps:
            print("    ... and the parameters of the inner merge (e.g. k, alpha for ties)")
    print("\npresets (the paper's published settings):")
    for name, pr in PRESETS.items():
        print(f"  {name}: {pr['merge_method']} {pr['parameters']}")
    return 0


def _eval(args) -> int:
    """generate responses for a data file, grade and summarize

    Generate responses of a checkpoint for the rows of a jsonl file (fields id, prompt, gold,
    optional dataset and level), extract and grade the answers, append one line per sample to
    --out and print accuracy and mean length. Rerunning resumes: samples already in --out are
    kept."""
    from l2s_kit.evaluate.spec import SAMPLING, EvalSpec, run_eval
    from l2s_kit.io import check_apart

    # responses are appended to --out: never to the data, the data folder or the model
    check_apart(args.out, {"data": args.data, "data folder": args.data_dir, "model": args.model})
    spec = EvalSpec.from_options(
        model=args.model, out=args.out, data=args.data, benchmarks=args.benchmark,
        data_dir=args.data_dir, prompt=args.prompt, limit=args.limit, stop=args.stop,
        grader=args.grader, grade_timeout=args.grade_timeout, ks=_ks(args),
        whole_response=args.whole_response, backend=args.backend, device=args.device,
        tensor_parallel=args.tensor_parallel, model_name=args.model_name,
        **{k: getattr(args, k) for k in SAMPLING})
    df, report = run_eval(spec, progress=not args.quiet)
    if report:
        print(report)
    _print_summary(df, spec.ks, spec.candidates)
    print(f"\n{len(df)} responses of {df['model'].iloc[0]} in {args.out}")
    return 0


def _print_summary(df, ks, candidates=None) -> None:
    """Accuracy and mean tokens with their 95% intervals, where the length goes and the sampling
    metrics, by dataset (and by level when the rows have levels)."""
    import pandas as pd

    from l2s_kit.analysis import full_summary

    cols = ["n", "accuracy", "accuracy_lo", "accuracy_hi", "mean_tokens", "tokens_lo", "tokens_hi",
            "truncation_rate", "think_closure_rate", "after_answer_share"]
    groups = [("model", "dataset")]
    if df["level"].notna().any():
        groups.append(("model", "dataset", "level"))
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        for by in groups:
            s = full_summary(df, by, ks=ks, **({"candidates": candidates} if candidates else {}))
            shown = [*by, *cols, *[c for c in s.columns if c.startswith(("avg@", "pass@", "maj@"))]]
            print(s[shown].round(2).to_string(index=False), end="\n\n")
    print("accuracy_lo/hi, tokens_lo/hi: 95% intervals (Wilson with one sample per problem, "
          "else a bootstrap over problems); rates and shares in %; after_answer_share NaN: not "
          "measured (no answer the finder reads in any response of the group).")


def _analyze(args) -> int:
    """the study's tables and figures from sample files you already have (no model)

    Read the sample files of lm-evaluation-harness (samples_<task>_<date>.jsonl from
    --log_samples), lighteval (details_<task>_<date>.parquet from --save-details), the kit's
    responses.jsonl, the Qwen2.5-Math toolkit's output, or a plain JSONL (prompt, response,
    gold[, id, level, sample, model, correct]); each format is told by its content. Write Table 1
    with 95% intervals, the views by level, reflection, where the length goes, paired tests
    against --system2, pass@k / maj@k (--k) and figures to --out. Name a file's model with
    NAME=FILE. The harness's grade is used unless --grader grades again with the kit's (the
    agreement of the two is reported, the disagreeing rows listed)."""
    from l2s_kit.analysis.analyze import analyze

    result = analyze(args.files, args.out, system1=args.system1, system2=args.system2,
                     tokenizer=args.tokenizer, grader=args.grader,
                     grade_timeout=args.grade_timeout, ks=_ks(args), png=args.png,
                     overwrite=args.overwrite, progress=not args.quiet)
    for note in result.notes:
        print(f"note: {note}")
    cols = [c for c in ("model", "n", "accuracy", "accuracy_lo", "accuracy_hi", "mean_tokens",
                        "length_change", "mcnemar_p", "reflection_ratio", "after_answer_share")
            if c in result.summary.columns]
    shown = result.summary[cols].rename(columns={"mean_tokens": f"mean_{result.length_unit}"})
    print(shown.round(2).to_string(index=False))
    if result.agreement is not None:
        print("\nthe harness's grade against the kit's:")
        print(result.agreement.round(1).to_string(index=False))
    print(f"\nreport, tables and figures in {args.out} (report.md)")
    return 0


def _regrade(args) -> int:
    """grade saved responses again into a new file (no generation)

    Grade every row of a responses file again with another grader (or the same one), writing a
    new file: the input is never changed. The new rows name their grader, so `l2s eval` treats
    the new file as another run."""
    import pandas as pd

    from l2s_kit.analysis import summarize
    from l2s_kit.evaluate import load_responses
    from l2s_kit.evaluate.regrade import regrade

    new = regrade(args.responses, args.out, grader=args.grader, after_think=not args.whole_response,
                  timeout=args.grade_timeout, overwrite=args.overwrite, progress=not args.quiet)
    old = load_responses(args.responses)
    changed = int((old["correct"].astype(bool).to_numpy() != new["correct"].astype(bool).to_numpy()).sum())
    both = pd.concat([old.assign(graded="input"), new.assign(graded="regraded")])
    table = summarize(both, by=("model", "dataset", "graded"))
    print(table.round(2).to_string(index=False))
    print(f"\n{changed} of {len(new)} grades changed; regraded responses in {args.out} "
          f"(grader {new['grader'].iloc[0]}); {args.responses} is unchanged")
    return 0


def _spectrum(args) -> int:
    """singular values of a pair's task vector, per weight matrix

    Stream the task vector MODEL - BASE (a System 1 / System 2 pair, or a merge and its base)
    one 2-D weight at a time, compute its singular values (exact for small matrices, a seeded
    randomized SVD with a stated error bound for large ones), and write one row per matrix:
    energy at the rank budget, rank for 90% / 99% of the energy, effective and stable rank,
    layer and module type. Prints whether the pair is low-rank enough for SVD merging (the rule
    is in l2s_kit.analysis.spectrum)."""
    from l2s_kit.analysis.spectrum import (
        check_table_path,
        low_rank_verdict,
        matrix_summary,
        save_table,
        spectrum_values,
    )

    try:
        rank = float(args.rank) if "." in args.rank else int(args.rank)
    except ValueError:
        raise L2SError(f"--rank {args.rank!r}: give a fraction such as 0.1 or a rank such as "
                       "64") from None
    if args.values and os.path.realpath(args.values) == os.path.realpath(args.out):
        raise L2SError(f"--values {args.values} is --out: the per-matrix table and the singular "
                       "values are two tables; give them two files")
    for path in (args.out, args.values):  # refuse before the work, not after
        if path:
            check_table_path(path, args.overwrite)
    values = spectrum_values(args.base, args.model, modules=args.modules, rank=rank, k=args.k,
                             method=args.method, device=args.device, layers=args.layers,
                             progress=not args.quiet)
    table = matrix_summary(values, rank)
    save_table(table, args.out, overwrite=args.overwrite)
    if args.values:
        save_table(values, args.values, overwrite=args.overwrite)
    verdict, sentence = low_rank_verdict(table)
    print(verdict.round(3).to_string(index=False))
    print(f"\n{sentence}")
    methods = table["method"].value_counts().to_dict()
    print(f"{len(table)} matrices ({', '.join(f'{n} {m}' for m, n in methods.items())}) -> "
          f"{args.out}" + (f", singular values -> {args.values}" if args.values else ""))
    return 0


def _int_or_name(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _sweep(args) -> int:
    """merge and evaluate a grid of recipes × datasets (local or Ray)

    Run a sweep file: every recipe merged and evaluated (and every listed model evaluated) on
    every dataset, in this process or as Ray tasks, then print the summary and Table 1. Merges
    and responses are reused."""
    from l2s_kit.analysis import format_table1
    from l2s_kit.study.sweep import load_sweep, run_sweep

    spec = load_sweep(args.file)
    if args.runner:
        spec["runner"] = args.runner
    jobs, datasets = spec.pop("jobs"), spec.pop("datasets")
    r = run_sweep(jobs, datasets, spec.pop("workdir"), progress=not args.quiet, **spec)
    print(r.summary.round(2).to_string(index=False))
    print()
    print(format_table1(r.table1))
    timeouts = int(r.jobs["grade_timeouts"].sum())
    print(f"\n{len(r.responses)} responses of {len(jobs)} models; {timeouts} grading timeouts; "
          f"responses in {Path(r.jobs['responses'].iloc[0]).parent}")
    return 0


PAIR_FIELDS = ("base", "model", "benchmark", "data_dir", "rows", "validation", "limit", "seed",
               "max_new_tokens", "grader", "backend", "tensor_parallel", "device", "n_per_level")
STUDY_FIELDS = ("tolerance", "n", "temperature", "top_p", "merge_in", "runner", "num_gpus",
                "ray_address", "workdir", "out", "png", "grid")


def _spec(args, names, command: str, config: str | None = None):
    """The StudySpec the command line's ``names`` options give (``--k`` as ks, the two prompt
    flags as prompts), over a ``--config`` file's settings when given: built once, checked once."""
    from l2s_kit.study import StudySpec

    given = set(_given(args, command))
    d = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    prompts = {role: getattr(args, f"prompt_{role}") for role in ("system1", "system2")
               if getattr(args, f"prompt_{role}", None)}
    d.update({"prompts": prompts} if prompts else {})
    d.update({"ks": args.k} if getattr(args, "k", None) else {})
    given = {k for k in d if k in given} | {k for k in ("prompts", "ks") if k in d}
    if config:
        return StudySpec.from_yaml(config, **{k: v for k, v in d.items() if k in given})
    return StudySpec.from_dict(d, where="the command line", given=given)


def _pair_setup(args):
    """The StudySetup the pair arguments describe (the built-in family without a pair)."""
    from l2s_kit.study import build_setup

    return build_setup(_spec(args, PAIR_FIELDS, args.command), progress=not args.quiet)


def _study(args) -> int:
    """the L2S study of a pair (the built-in family by default)

    Merge System 1 (--base) with System 2 (--model) by a grid of methods, evaluate every model,
    choose each method's setting on the validation problems and report on the test problems,
    with tables and figures. With no pair, the built-in family (built or reused). Re-runs reuse
    merges and responses."""
    from l2s_kit.study import print_result, run_study

    given = _given(args, "study")
    spec = _spec(args, PAIR_FIELDS + STUDY_FIELDS, "study", args.config)
    r = run_study(spec=spec, progress=not args.quiet, overwrite=args.overwrite)
    print_result(r)
    from l2s_kit.notebooks.gallery import write_gallery

    out = r.out.resolve()
    gallery = Path(args.gallery) if args.gallery else out.parent
    if gallery != out and out.is_relative_to(gallery.resolve()):
        page = write_gallery(gallery)
        if page:
            print(f"gallery:   {page}")
    else:
        print(f"gallery:   none ({r.out} is not inside {gallery})")
    if r.missing_pngs:
        again = _command("study", {**given, "png": True})
        print(f"figures incomplete: {len(r.missing_pngs)} PNG(s) missing; every table and HTML "
              f"figure was written.", file=sys.stderr)
        for why in r.missing_pngs:
            print(f"  {why}", file=sys.stderr)
        print(f"make them again (the merges and responses are reused): {again}", file=sys.stderr)
        return EXIT_FIGURES_INCOMPLETE
    return 0


def _given(args, command: str) -> dict:
    """The options of ``args`` the user gave: those whose value differs from the command's
    default (a default given explicitly reads as not given)."""
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    return {k: v for k, v in vars(args).items()
            if k not in ("func", "command") and v != sub.get_default(k)}


def _command(command: str, options: dict) -> str:
    """``l2s COMMAND --flag value ...``: a command line giving ``options`` (dest → value)."""
    import shlex

    sub = build_parser()._subparsers._group_actions[0].choices[command]
    flags = {a.dest: a for a in sub._actions}
    words = ["l2s", command]
    for dest, value in options.items():
        action = flags.get(dest)
        if action is None or value is None or value is False:
            continue
        if not action.option_strings:
            words.append(shlex.quote(str(value)))
            continue
        flag = max(action.option_strings, key=len)
        if value is True and action.nargs == 0:
            words.append(flag)
        else:
            for v in value if isinstance(value, list) else [value]:
                words += [flag, shlex.quote(str(v))]
    return " ".join(words)


def _ks(args) -> list[int] | None:
    from l2s_kit.analysis.sampling import parse_k

    return parse_k(args.k) if getattr(args, "k", None) else None


def _sampling_arguments(p) -> None:
    p.add_argument("--n", type=int, default=None,
                   help="samples per problem (default 1; more needs --temperature > 0)")
    p.add_argument("--temperature", type=_number, default=None, help="0 = greedy (default)")
    p.add_argument("--top-p", dest="top_p", type=_number, default=None,
                   help="nucleus sampling mass (default 1)")
    p.add_argument("--k", default=None, metavar="K,K,...",
                   help="report pass@k and maj@k for these k (each at most --n), e.g. 1,4")


def _tune(args) -> int:
    """choose a merge automatically on the validation split (Optuna)

    Search one method's parameters (Optuna TPE or NSGA-II) for the shortest merge within
    --tolerance points of System 2, or for the accuracy-against-length Pareto front; candidates
    are tried on a small informative subset first and only promising ones on the whole
    validation split; the chosen merge(s) are evaluated on test. Resumable: run it again to
    continue."""
    import pandas as pd
    import yaml

    from l2s_kit.io.yamlfile import safe_load
    from l2s_kit.study.tune import tune

    space = {}
    for item in args.space or []:
        name, eq, rng = item.partition("=")
        lo, colon, hi = rng.partition(":")
        try:
            if not (eq and colon):
                raise ValueError
            space[name] = (float(safe_load(lo)), float(safe_load(hi)))
        except (ValueError, TypeError, yaml.YAMLError):
            raise L2SError(f"--space {item!r}: give NAME=LOW:HIGH, e.g. --space k=0.5:0.95") from None
    setup = _pair_setup(args)
    r = tune(args.method, setup=setup, space=space or None, schedules=args.schedule or (),
             objective=args.objective, tolerance=args.tolerance, trials=args.trials,
             subset=args.subset, sampler=args.sampler, seed=args.seed, workdir=args.workdir,
             out=args.out, progress=not args.quiet, warm_start=args.warm_start,
             overwrite=args.overwrite)
    cols = [c for c in ("trial", "state", "model", "rung", "accuracy", "mean_tokens",
                        "subset_accuracy", "subset_mean_tokens", "problems") if c in r.trials]
    with pd.option_context("display.width", 200, "display.max_rows", 500,
                           "display.float_format", "{:.2f}".format):
        print(r.trials[cols].to_string(index=False))
        print(f"\nSystem 2 on validation: {r.reference['accuracy']:.1f}% accuracy, "
              f"{r.reference['mean_tokens']:.1f} tokens; {len(r.trials)} trials, "
              f"{r.evaluations} problems generated")
        if not len(r.chosen):
            print(f"no trial reached the whole validation split within {r.tolerance:g} points "
                  "of System 2; try more --trials or another --space")
            return 1
        print(f"\nchosen ({r.objective}):")
        print(r.chosen[["model", "accuracy", "mean_tokens"]].to_string(index=False))
        print("\non test:")
        print(r.test[[c for c in ("model", "accuracy", "mean_tokens", "length_change",
                                  "accuracy_change") if c in r.test]].to_string(index=False))
    if r.files:
        print(f"\ntables: {', '.join(map(str, r.files))}")
    return 0


def _check(args) -> int:
    """do the checkpoints fit together? every difference, with a verdict

    Compare System 1 (BASE) with each MODEL before any tensor is read: architecture and
    tensors, every config.json key, tokenizers (vocabulary, tokens at the same id, special
    tokens, chat template), generation_config.json, dtypes. Each difference gets a verdict:
    blocks, takes (the merge takes it from one side), harmless. Exit status 1 when anything
    blocks the merge, 0 otherwise."""
    from l2s_kit.merging.compat import BLOCKS, HARMLESS, check_pair

    for what, folder in (("base", args.base), *(("model", m) for m in args.models)):
        if not (Path(folder) / "config.json").is_file():
            raise L2SError(f"{what} {folder}: not a checkpoint folder (no config.json)")
    if args.csv:  # before the work: never an input's file, never a file of the user's unasked
        from l2s_kit.io import check_apart, claim_file

        check_apart(args.csv, {"base": args.base,
                               **{f"model {i + 1}": m for i, m in enumerate(args.models)}})
        claim_file(args.csv, args.overwrite, "--csv")
    table = check_pair(args.base, args.models, config_source=args.config_source,
                       tokenizer_source=args.tokenizer_source)
    shown = table if args.all else table[table["verdict"] != HARMLESS]
    if len(shown):
        for model, part in shown.groupby("model", sort=False):
            print(f"{args.base}  vs  {model}")
            for r in part.itertuples():
                print(f"  [{r.verdict}] {r.area} {r.item}: base {r.base_value} | model "
                      f"{r.model_value}\n      {r.note}")
    blocks = int((table["verdict"] == BLOCKS).sum())
    hidden = len(table) - len(shown)
    print(f"{len(table)} differences: {blocks} block the merge, "
          f"{int((table['verdict'] == 'takes').sum())} taken from one side, {hidden} harmless"
          + (" (--all shows them)" if hidden and not args.all else ""))
    if args.csv:
        from l2s_kit.io import write_csv

        write_csv(table, args.csv, remember=True)
    return 1 if blocks else 0


def _zoo(args) -> int:
    import json

    from l2s_kit.zoo import build_family, default_root, export_benchmark, shipped_family

    if args.zoo_command == "export":
        folder = export_benchmark(args.dir, n_per_level=args.n_per_level, overwrite=args.overwrite)
        print(f"{folder}/test.jsonl and validation.jsonl: the family's task in the Qwen2.5-Math "
              f"toolkit's layout ({args.n_per_level} problems per level each); try the real-pair "
              f"path with\n  l2s study --base <family>/system1 --model <family>/system2 "
              f"--benchmark l2s_family --data-dir {args.dir} --validation "
              f"{folder}/validation.jsonl")
        return 0

    fam = build_family(args.root or default_root(), force=args.force, progress=not args.quiet)
    m = fam.manifest
    print(f"family {m['family']}: {m['parameters']:,} parameters per model, built in "
          f"{sum(m['build_seconds'].values()):.0f} s")
    print(json.dumps(m["weights_hash"], indent=2))
    print(f"system1 (base, quick): {fam.system1}\nsystem2 (slow):        {fam.system2}")
    shipped = shipped_family()
    if m.get("matches_shipped") is True:
        print("the same weights as the family shipped with the package")
    elif m.get("matches_shipped") is False:
        print(f"other weights than the family shipped with the package ({shipped.root}): "
              "training repeats bit for bit only on one machine with one thread count. The "
              "study, the notebooks and the tests use the shipped family; study this one with "
              f"--base {fam.system1} --model {fam.system2}")
    return 0


def _render_notebook(args) -> int:
    """``l2s notebooks render``: an executed notebook (say, by papermill) as one HTML page that
    opens offline, figures and widgets drawn."""
    import nbformat

    from l2s_kit.io import check_apart, claim_file
    from l2s_kit.notebooks.render import render_html

    src = Path(args.notebook)
    if not src.is_file():
        raise L2SError(f"notebook {src} does not exist (give an executed .ipynb)")
    out = Path(args.out) if args.out else src.with_suffix(".html")
    check_apart(out, {"notebook": src})
    claim_file(out, args.overwrite, "--out")
    try:
        nb = nbformat.read(src, as_version=4)
    except Exception as e:  # nbformat's reader raises several kinds for a file that is no notebook
        raise L2SError(f"{src}: not a notebook ({type(e).__name__}: {e})") from None
    render_html(nb, out, remember=True)
    print(f"rendered {src} -> {out}")
    return 0


def _notebooks(args) -> int:
    """run the parameterized notebooks headless and render them

    Run notebooks with papermill into OUT/<notebook>/<run>/: the executed .ipynb, an offline
    .html and a .png per plotly figure. A failing notebook keeps its executed copy; the others
    still run; the exit code is 1."""

    from l2s_kit.notebooks import find_notebooks, notebook_parameters, run_notebooks
    from l2s_kit.notebooks.assets import widget_renderer

    if args.action == "assets":
        print(f"widget renderer: {widget_renderer()}")
        return 0
    if args.action == "compare":
        return _compare_runs(args)
    if args.action == "render":
        return _render_notebook(args)
    if args.action == "gallery":
        from l2s_kit.notebooks.gallery import write_gallery

        page = write_gallery(args.out)
        print(f"gallery: {page}" if page else "gallery: not written")
        return 0 if page else 1
    if args.action == "list":
        for name, path in find_notebooks(args.dir).items():
            print(f"{name}  ({path})")
            for k, v in notebook_parameters(path).items():
                print(f"    {k} = {v['default']}  # {v['help']}")
        return 0
    params = {k: _yaml_value(f"--param {k}={v}", v) for k, v in args.param or []}
    df = run_notebooks(args.names or None, params, parameters_file=args.file, run=args.run,
                       notebooks=args.dir, out=args.out, overwrite=args.overwrite,
                       png=not args.no_png, progress=not args.quiet)
    for r in df.itertuples():
        extra = f"{r.pngs} PNG" if r.status == "ok" else r.error
        if isinstance(r.compared_with, str):
            extra += f"; since {r.compared_with}: {int(r.moved)} number(s) moved"
            extra += " while parameters and inputs did not" if r.unexplained else ""
        print(f"{r.status:6} {r.notebook:28} {r.seconds:6.1f} s  {r.folder}  ({extra})")
    print(f"gallery: {Path(args.out) / 'index.html'}")
    failed = df.loc[df["status"] != "ok", "notebook"].tolist()
    if failed:
        print(f"failed: {', '.join(failed)} (the executed copies in their folders show the error)",
              file=sys.stderr)
        return 1
    flagged = df.loc[df["unexplained"].fillna(False).astype(bool), "notebook"].tolist()
    if flagged:
        print(f"numbers moved while parameters and inputs did not: {', '.join(flagged)} (l2s "
              "notebooks compare NOTEBOOK RUN_A RUN_B shows which)", file=sys.stderr)
        return 1
    return 0


def _compare_runs(args) -> int:
    from l2s_kit.io import runs

    def folder(run: str) -> Path:
        p = Path(args.out) / args.notebook / run
        if p.is_dir() or not Path(run).is_dir():
            return p
        return Path(run)

    a, b = folder(args.run_a), folder(args.run_b)
    c = runs.compare_runs(a, b, rtol=args.rtol, atol=args.atol)
    print(f"{args.notebook}: {a} → {b}")
    print(c.format())
    return 1 if c.moved else 0


# ---- the parser: shared options once, one small builder per subcommand -----------------------

def _count(value: str) -> int:
    """A command-line count (problems, trials, GPUs, prompts per batch): a whole number >= 1."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return n


def _number(value: str) -> float:
    """A command-line real number (a temperature, a tolerance, a timeout): finite."""
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number")
    return x


def _yaml_value(where: str, text: str):
    """A value given on the command line, read as YAML (``0.7``, ``[0.2, 0.9]``, ``true``)."""
    import yaml

    from l2s_kit.io.yamlfile import safe_load

    try:
        return safe_load(text)
    except yaml.YAMLError as e:
        raise L2SError(f"{where}: not a YAML value ({' '.join(str(e).split())})") from None


def _subcommand(sub, name: str, handler) -> argparse.ArgumentParser:
    """The subcommand ``name``: its one-line help and its description are ``handler``'s
    docstring (first line; the rest)."""
    head, _, rest = (handler.__doc__ or "").strip().partition("\n")
    return sub.add_parser(name, help=head.strip(), description=" ".join(rest.split()) or None)


def _runs(p: argparse.ArgumentParser, func, overwrite: str | None = None,
          quiet: str | None = None) -> None:
    """The subcommand runs ``func``; with ``overwrite`` / ``quiet`` (their help) it takes
    ``--overwrite`` / ``--quiet``."""
    if overwrite is not None:
        _overwrite(p, overwrite)
    if quiet is not None:
        _quiet(p, quiet)
    p.set_defaults(func=func)


def _quiet(p: argparse.ArgumentParser, what: str = "no progress bar") -> None:
    p.add_argument("--quiet", action="store_true", help=what)


def _results_overwrite(kind: str) -> str:
    return (f"replace an --out folder that holds files of the user's (an earlier {kind}'s folder "
            "is replaced without it)")


def _overwrite(p: argparse.ArgumentParser, what: str = "replace an existing output") -> None:
    p.add_argument("--overwrite", action="store_true", help=what)


def _device(p: argparse.ArgumentParser, default: str | None = "cpu", note: str = "") -> None:
    p.add_argument("--device", default=default, help=f"cpu (default) or cuda[:N]{note}")


def _merge_parser(sub) -> None:
    p = sub.add_parser("merge", help="merge checkpoints as a recipe (or a preset) says",
                       description="Merge Hugging Face checkpoint folders. The recipe is "
                       "validated and the checkpoints checked before any tensor is read; the "
                       "output folder appears complete or not at all.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="recipe (YAML, mergekit's shape):\n"
                       "  merge_method: ties\n  base_model: /models/Qwen2.5-Math-7B\n"
                       "  models:\n    - model: /models/DeepSeek-R1-Distill-Qwen-7B\n"
                       "  parameters: {k: 0.8, alpha: 1.0}\n")
    p.add_argument("recipe", nargs="?", help="recipe YAML file (l2s_kit or mergekit format)")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--preset", help="a published setting, e.g. ties-7b (see `l2s methods`)")
    p.add_argument("--method", help="merge method, e.g. task_arithmetic")
    p.add_argument("--base", help="base checkpoint folder (System 1)")
    p.add_argument("--model", action="append", help="checkpoint folder to merge (System 2); repeat for more")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="set a method parameter, e.g. --param alpha=0.7 (repeatable)")
    p.add_argument("--out-dtype", dest="out_dtype", choices=list(DTYPES),
                   help="stored dtype (default: as the base)")
    p.add_argument("--tokenizer-source", dest="tokenizer_source",
                   help="tokenizer and generation_config.json from: model (System 2, the "
                   "default; presets: base), base, a folder, or union (the union of the "
                   "vocabularies, embedding rows matched by token)")
    p.add_argument("--shard-size", default=None, help="largest shard, e.g. 2GB (default 2GB)")
    p.add_argument("--force", action="store_true",
                   help="merge even what `l2s check` says blocks (the card records it)")
    _device(p, None)
    _runs(p, _merge, overwrite="replace an existing output folder", quiet="no progress bar")


def _methods_parser(sub) -> None:
    p = sub.add_parser("methods", help="list merge methods, their parameters and presets")
    p.add_argument("--markdown", action="store_true",
                   help="print the methods as the Markdown table of docs/methods.md")
    _runs(p, _methods)


def _eval_parser(sub) -> None:
    p = _subcommand(sub, "eval", _eval)
    p.add_argument("model", help="checkpoint folder")
    p.add_argument("--data", help="jsonl rows with id, prompt, gold[, dataset, level]")
    p.add_argument("--benchmark", action="append", metavar="NAME",
                   help="a benchmark instead of --data (repeatable): math500, gsm8k, aime24, "
                   "amc23, minerva_math, olympiadbench, college_math")
    p.add_argument("--data-dir", dest="data_dir", help="folder with <benchmark>/test.jsonl")
    p.add_argument("--prompt", default=None,
                   help="prompt template for --benchmark: qwen25-math-cot (default), fewshot, chat "
                   "(a benchmark that carries its own prompt, l2s_family, takes none)")
    p.add_argument("--limit", type=_count, default=None, help="first N problems of each benchmark")
    _grader_arguments(p, None)
    p.add_argument("--out", required=True, help="responses.jsonl to write (appended to, resumed)")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", default=None,
                   help="generated tokens per sample: a number or 8k / 10k (default 256)")
    _sampling_arguments(p)
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default 0)")
    p.add_argument("--stop", action="append", metavar="STR",
                   help="stop string, kept in the response (repeatable; default with "
                   "--benchmark: the prompt template's)")
    p.add_argument("--batch-size", dest="batch_size", type=_count, default=None,
                   help="rows decoded at once (default: as many as fit on the device; an "
                   "out-of-memory error halves it)")
    _device(p, note=" (transformers)")
    p.add_argument("--backend", default="transformers", choices=list(BACKENDS),
                   help="generation backend (vllm: GPUs, pip install 'l2s_kit[vllm]')")
    p.add_argument("--tensor-parallel", dest="tensor_parallel", type=_count, default=1,
                   help="GPUs per model with --backend vllm (default 1)")
    p.add_argument("--model-name", dest="model_name", help="name in the results (default: folder)")
    _runs(p, _eval, quiet="no progress bar")


def _grader_arguments(p, default: str | None) -> None:

    p.add_argument("--grader", default=default, choices=list(GRADERS),
                   help="simple: exact match, numbers as numbers; math-verify: math-verify's strict "
                   "comparison; reference: the Qwen2.5-Math toolkit's tolerances"
                   + (f" (default {default})" if default else " (default: math-verify for "
                      "--benchmark, simple for --data)"))
    p.add_argument("--grade-timeout", dest="grade_timeout", type=_number, default=5.0,
                   help="seconds per sample for the math-verify graders (default 5)")
    p.add_argument("--whole-response", dest="whole_response", action="store_true",
                   help="take the answer from the whole response, even after a closed <think> "
                   "block (default: from the text after </think>, as lighteval and lm-eval do)")


def _analyze_parser(sub) -> None:
    p = _subcommand(sub, "analyze", _analyze)
    p.add_argument("files", nargs="+", metavar="[NAME=]FILE",
                   help="sample files (lm-eval samples_*.jsonl, lighteval details_*.parquet, "
                   "responses.jsonl, or a JSONL of prompt, response, gold); NAME= names the model")
    p.add_argument("--out", required=True, help="folder for the report, tables and figures")
    p.add_argument("--system2", default=None, metavar="NAME",
                   help="the model the others are compared with (paired tests, length change)")
    p.add_argument("--system1", default=None, metavar="NAME", help="the quick-thinking model")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="count lengths in this tokenizer's tokens (default: words)")
    p.add_argument("--grader", default=None, choices=list(GRADERS),
                   help="grade again with the kit's grader (default: the harness's grade)")
    p.add_argument("--grade-timeout", dest="grade_timeout", type=_number, default=5.0,
                   help="seconds per sample for the math-verify graders (default 5)")
    p.add_argument("--k", default=None, help="pass@k and maj@k for these k, e.g. 1,8")
    p.add_argument("--png", action="store_true", help="also PNG figures (kaleido + Chromium)")
    _runs(p, _analyze, overwrite="replace an earlier analysis in --out", quiet="no progress bar")


def _regrade_parser(sub) -> None:
    p = _subcommand(sub, "regrade", _regrade)
    p.add_argument("responses", help="a responses.jsonl written by l2s eval or l2s study")
    p.add_argument("--out", required=True, help="the new responses file to write")
    _grader_arguments(p, "math-verify")
    _runs(p, _regrade, overwrite="replace an existing --out (never the input)", quiet="no progress bar")


def _spectrum_parser(sub) -> None:
    p = _subcommand(sub, "spectrum", _spectrum)
    p.add_argument("base", help="base checkpoint folder (System 1)")
    p.add_argument("model", help="checkpoint folder whose task vector is inspected (System 2)")
    p.add_argument("--out", required=True, help="per-matrix table, .csv or .parquet")
    p.add_argument("--values", default=None,
                   help="also write every singular value (one row each), .csv or .parquet")
    p.add_argument("--rank", default="0.1",
                   help="rank budget: a fraction of min(m, n) such as 0.1 (default, Twin's "
                   "mask_rate 0.9) or an integer rank such as 64")
    p.add_argument("--modules", nargs="+", default=None, metavar="TYPE",
                   help="module types to inspect: embedding q k v o gate up down head (default all)")
    p.add_argument("--layers", nargs="+", type=int, default=None, metavar="I",
                   help="layer indices to inspect (default all; embedding/head are kept only "
                   "without this option)")
    p.add_argument("--method", default="auto", choices=list(SVD_ALGORITHMS),
                   help="SVD: exact for cheap matrices, randomized for large ones (auto, default)")
    p.add_argument("--k", type=int, default=None,
                   help="values the randomized SVD computes (default max(2 x budget, 64))")
    _device(p)
    _runs(p, _spectrum, overwrite="replace existing output files", quiet="no progress bar")


def _sweep_parser(sub) -> None:
    p = _subcommand(sub, "sweep", _sweep)
    p.add_argument("file", help="sweep YAML (recipes, models, benchmarks, data_dir, runner, ...)")
    p.add_argument("--runner", choices=list(RUNNERS), default=None,
                   help="override the file's runner")
    _runs(p, _sweep, quiet="no progress bars")


def _pair_arguments(p) -> None:
    """The arguments that describe a study's pair, data and generation (study, tune)."""
    p.add_argument("--base", default=None, help="System 1 checkpoint folder (e.g. Qwen2.5-Math-7B)")
    p.add_argument("--model", default=None,
                   help="System 2 checkpoint folder (e.g. DeepSeek-R1-Distill-Qwen-7B)")
    p.add_argument("--benchmark", default=None,
                   help="a benchmark in the Qwen2.5-Math toolkit layout (math500, gsm8k, ..., "
                   "l2s_family), read from --data-dir")
    p.add_argument("--data-dir", dest="data_dir", default=None,
                   help="folder holding <benchmark>/test.jsonl")
    p.add_argument("--rows", default=None, help="or a .jsonl of rows (id, prompt, gold[, level])")
    p.add_argument("--validation", default=None,
                   help="N problems chosen (seeded, stratified by level) for choosing settings, "
                   "the rest for reporting; or a file of validation rows (default: 20%%)")
    p.add_argument("--limit", type=_count, default=None,
                   help="keep N problems of the benchmark or rows (stratified by level), for quick "
                   "runs; a --validation file is used whole")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits (default 0)")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", default=None,
                   help="generation limit: a number, 8k or 10k (default: 8k for a pair)")
    p.add_argument("--prompt-system1", dest="prompt_system1", default=None,
                   help="System 1's prompt (default fewshot for a benchmark)")
    p.add_argument("--prompt-system2", dest="prompt_system2", default=None,
                   help="System 2's and the merges' prompt (default qwen25-math-cot)")
    p.add_argument("--grader", choices=list(GRADERS), default=None,
                   help="default: math-verify for a pair's benchmark")
    p.add_argument("--backend", choices=list(BACKENDS), default="transformers")
    p.add_argument("--tensor-parallel", dest="tensor_parallel", type=_count, default=1,
                   help="GPUs per model with --backend vllm")
    _device(p)


def _tune_parser(sub) -> None:
    p = _subcommand(sub, "tune", _tune)
    p.add_argument("--method", required=True, help="the merge method to tune, e.g. ties")
    p.add_argument("--space", action="append", metavar="NAME=LOW:HIGH",
                   help="a parameter's range (repeatable; default: every float parameter in "
                   "its own range)")
    p.add_argument("--schedule", action="append", metavar="NAME",
                   help="search NAME as a layer schedule: its first- and last-layer values")
    p.add_argument("--objective", choices=list(OBJECTIVES), default="shortest")
    p.add_argument("--trials", type=_count, default=30, help="trials in all (default 30)")
    p.add_argument("--subset", type=_number, default=0.25,
                   help="share of the validation problems each candidate is tried on first")
    p.add_argument("--sampler", choices=list(SAMPLERS), default="tpe")
    p.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                   help="start from scratch, not from the study grid's settings of the method")
    _tolerance(p, "the merge")
    _pair_arguments(p)
    _family_size(p, 20)
    _folders(p, "data/runs/tune", "responses and the search's state (reused by later runs)",
             "write trials.csv, chosen.csv and test.csv here")
    _runs(p, _tune, overwrite=_results_overwrite("search"), quiet="no progress bars")


def _tolerance(p, who: str) -> None:
    p.add_argument("--tolerance", type=_number, default=3.0,
                   help=f"accuracy points below System 2 {who} may lose (default 3)")


def _family_size(p, default: int) -> None:
    p.add_argument("--n-per-level", dest="n_per_level", type=_count, default=default,
                   help=f"the family's problems per level and split (default {default}; level 1 "
                   "has fewer)")


def _folders(p, workdir: str, workdir_help: str, out_help: str) -> None:
    p.add_argument("--workdir", default=workdir, help=workdir_help)
    p.add_argument("--out", default=None, help=out_help)


def _study_parser(sub) -> None:
    p = _subcommand(sub, "study", _study)
    _pair_arguments(p)
    p.add_argument("--grid", default=None,
                   help="YAML grid: [[method, {param: value}], ...] or {method: {param: [values]}} "
                   "(default: the paper's settings for a pair; for the family those and a sweep of "
                   "α / k / p, l2s_kit.merging.methods.settings.GRID)")
    _tolerance(p, "a chosen merge")
    _sampling_arguments(p)
    p.add_argument("--merge-in", dest="merge_in", choices=list(MERGE_IN),
                   default="auto", help="merges swapped into a loaded System 1 (memory) or "
                   "written once per recipe (disk); auto: memory when it fits")
    p.add_argument("--runner", choices=list(RUNNERS), default="local",
                   help="ray: one Ray task per model")
    p.add_argument("--num-gpus", dest="num_gpus", type=_number, default=0,
                   help="GPUs per Ray task (> 0 evaluates on CUDA)")
    p.add_argument("--ray-address", dest="ray_address", default=None,
                   help="a running Ray cluster (default: a local Ray)")
    _folders(p, "data/runs/study", "merges and responses", "tables and figures (default: "
             "figures/study for the family, figures/study-<pair> for a pair)")
    _family_size(p, 100)
    p.add_argument("--png", action="store_true", help="also export PNGs (kaleido + Chromium)")
    p.add_argument("--gallery", default=None,
                   help="the folder whose index.html lists this run with the notebooks' runs "
                   "(default: the folder holding --out, e.g. figures)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a YAML file of the study's settings (the names of StudySpec: base, "
                   "model, benchmark, grid, tolerance, ...); options given here win")
    _runs(p, _study, overwrite=_results_overwrite("study"), quiet="no progress bars")


def _check_parser(sub) -> None:
    p = _subcommand(sub, "check", _check)
    p.add_argument("base", help="System 1 checkpoint folder")
    p.add_argument("models", nargs="+", help="System 2 (and further) checkpoint folders")
    p.add_argument("--config-source", dest="config_source", default="base",
                   help="where the merge takes config.json from: base (default) or a folder")
    p.add_argument("--tokenizer-source", dest="tokenizer_source", default="model",
                   help="where the merge takes the tokenizer from: model (System 2, default), "
                   "base, a folder or union")
    p.add_argument("--all", action="store_true", help="also list harmless differences")
    p.add_argument("--csv", default=None, help="also write the table as CSV")
    _runs(p, _check, overwrite="replace an existing --csv file")


def _zoo_parser(sub) -> None:
    p = sub.add_parser("zoo", help="the built-in model family")
    zsub = p.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    z = zsub.add_parser("build", help="train the family from scratch (or reuse a build); prints "
                        "its folders and hashes and whether they are the shipped family's")
    z.add_argument("--root", default=None, help="build folder (default: $L2S_ZOO or data/zoo)")
    z.add_argument("--force", action="store_true", help="rebuild even if cached")
    _quiet(z, "no progress bars")
    z.set_defaults(func=_zoo)
    e = zsub.add_parser("export", help="write the family's task as a benchmark folder "
                        "(DIR/l2s_family/test.jsonl, validation.jsonl)")
    e.add_argument("dir", help="the data folder to write l2s_family/ into")
    e.add_argument("--n-per-level", dest="n_per_level", type=_count, default=100,
                   help="problems per level and split (level 1 has fewer)")
    _overwrite(e, "replace an existing l2s_family folder")
    e.set_defaults(func=_zoo)


def _notebooks_parser(sub) -> None:
    p = _subcommand(sub, "notebooks", _notebooks)
    nsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = nsub.add_parser("run", help="execute and render notebooks (all by default)")
    r.add_argument("names", nargs="*", help="notebook names (default: every notebook in --dir)")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a parameter (VALUE is read as YAML: 0.5, [0.2, 0.5], text)")
    r.add_argument("-f", "--file", default=None, help="a YAML file of parameters")
    r.add_argument("--run", default=None, help="run name (default, or 'auto': the date and "
                   "time); each run is compared with the notebook's previous one, and the exit "
                   "code is 1 when its numbers moved while its parameters and inputs did not")
    r.add_argument("--dir", default="notebooks", help="the notebooks' folder")
    r.add_argument("--out", default="figures", help="where run folders go")
    _overwrite(r, "replace an existing run folder")
    r.add_argument("--no-png", dest="no_png", action="store_true", help="skip PNG export")
    _quiet(r, "no progress bars")
    ls = nsub.add_parser("list", help="list notebooks and their parameters")
    ls.add_argument("--dir", default="notebooks", help="the notebooks' folder")
    nsub.add_parser("assets", help="fetch the widget renderer rendered notebooks inline (once)")
    c = nsub.add_parser("compare", help="what changed between two runs of a notebook",
                        description="Parameters, inputs (weights and data fingerprints), code, and "
                        "the key numbers that moved beyond the tolerance (|a - b| > max(atol, "
                        "rtol * max(|a|, |b|))). Exit code 1 when numbers moved, 0 when none did.")
    c.add_argument("notebook", help="the notebook's name (its runs are OUT/NOTEBOOK/RUN)")
    c.add_argument("run_a", metavar="RUN_A", help="the earlier run's name (or its folder)")
    c.add_argument("run_b", metavar="RUN_B", help="the later run's name (or its folder)")
    c.add_argument("--out", default="figures", help="where run folders are")
    c.add_argument("--rtol", type=_number, default=1e-3, help="relative tolerance (default 1e-3)")
    c.add_argument("--atol", type=_number, default=1e-9, help="absolute tolerance (default 1e-9)")
    rd = nsub.add_parser("render", help="an executed notebook (papermill's, say) as one HTML page "
                         "that opens offline, figures and widgets drawn")
    rd.add_argument("notebook", help="the executed .ipynb")
    rd.add_argument("--out", default=None, help="the .html to write (default: beside it)")
    _overwrite(rd, "replace an earlier rendering the kit wrote")
    g = nsub.add_parser("gallery", help="rewrite OUT/index.html, the page listing every run")
    g.add_argument("--out", default="figures", help="the folder of the runs")
    _runs(p, _notebooks)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l2s", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"l2s_kit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for build in (_merge_parser, _check_parser, _methods_parser, _eval_parser, _analyze_parser, _regrade_parser, _spectrum_parser, _sweep_parser, _study_parser, _tune_parser, _zoo_parser, _notebooks_parser):
        build(sub)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


# The optional extras each command needs (l2s_kit.errors.EXTRAS), checked before it starts.
NEEDS: dict[str, tuple[str, ...]] = {"notebooks": ("notebooks",), "tune": ("tune",),
                                     "study": ("notebooks",)}


# the options of each command that name checkpoints: a local folder or a hub id (l2s_kit.io.hub)
CHECKPOINT_OPTIONS = {"merge": ("base", "model"), "check": ("base", "models"), "eval": ("model",),
                      "spectrum": ("base", "model"), "study": ("base", "model"),
                      "tune": ("base", "model")}


def _resolve_hub_ids(args) -> None:
    """Each checkpoint option given as a hub id (``Qwen/Qwen2.5-Math-7B[@rev]``) becomes the
    folder of its snapshot in the hub cache, downloaded once when missing."""
    from l2s_kit.io.hub import resolve_checkpoint

    quiet = getattr(args, "quiet", False)
    for name in CHECKPOINT_OPTIONS.get(args.command, ()):
        value = getattr(args, name, None)
        if isinstance(value, list):
            setattr(args, name, [resolve_checkpoint(v, f"--{name}", not quiet) for v in value])
        elif value:
            setattr(args, name, resolve_checkpoint(value, f"--{name}", not quiet))


def main(argv: list[str] | None = None) -> int:
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # a kill cleans up as Ctrl-C does
        # past a file size limit (ulimit -f) a write fails with EFBIG, said in one line below,
        # instead of the process being killed without a word
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from l2s_kit.io.runtime import limit_threads, line_progress

    stderr = sys.stderr
    sys.stderr = line_progress(stderr)  # progress bars as lines when not on a terminal
    try:
        limit_threads()  # never more torch threads than the cores this process may use
        for extra in NEEDS.get(args.command, ()):
            require(extra)
        _resolve_hub_ids(args)
        return args.func(args)
    except L2SError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        if (why := missing_extra(e)) is None:
            raise
        print(f"error: l2s {args.command}: {why}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no partial output was left behind", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, read-only folder, a file where a folder should be, ...
        where = f" ({e.filename})" if e.filename else ""
        what = e.strerror or str(e)
        if isinstance(e, (FileExistsError, NotADirectoryError)) and e.filename \
                and os.path.isfile(e.filename):
            what, where = f"{e.filename} is a file where a folder is needed", ""
        print(f"error: l2s {args.command}: {what}{where}; nothing half-written was left behind",
              file=sys.stderr)
        return 2
    except Exception as e:  # one line, never a traceback (L2S_DEBUG=1 shows it)
        if os.environ.get("L2S_DEBUG"):
            raise
        print(f"error: l2s {args.command}: {type(e).__name__}: {' '.join(str(e).split())} "
              "(an input the kit does not check yet, or a bug; L2S_DEBUG=1 shows where)",
              file=sys.stderr)
        return 2
    finally:
        if sys.stderr is not stderr:
            sys.stderr.close()  # a progress line it still held
            sys.stderr = stderr


if __name__ == "__main__":
    sys.exit(main())
