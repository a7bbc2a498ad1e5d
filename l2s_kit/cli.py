"""The ``l2s`` command line: merge checkpoints, list methods and presets, run the demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from l2s_kit import __version__
from l2s_kit.errors import L2SError

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
  l2s demo                                        merge tiny generated checkpoints end to end
"""


def _merge(args) -> int:
    import dataclasses

    import yaml

    from l2s_kit.merging import load_recipe, merge

    if args.recipe and (args.preset or args.method):
        raise L2SError("give either a recipe file or --preset/--method, not both")
    if args.recipe:
        recipe = load_recipe(args.recipe)
    elif (args.preset or args.method) and args.base and args.model:
        recipe = load_recipe({"base_model": args.base, "models": [{"model": m} for m in args.model],
                              **({"preset": args.preset} if args.preset else {}),
                              **({"merge_method": args.method} if args.method else {})})
    else:
        raise L2SError("give a recipe file, or --preset/--method with --base and --model "
                       "(see `l2s merge --help`)")
    params = {}
    for kv in args.param or []:
        key, eq, val = kv.partition("=")
        if not eq:
            raise L2SError(f"--param {kv!r}: write it as NAME=VALUE, e.g. --param alpha=0.7")
        params[key] = yaml.safe_load(val)
    if params or args.out_dtype or args.tokenizer_source:
        d = recipe.to_dict()
        d["parameters"].update(params)
        d["out_dtype"] = args.out_dtype or d["out_dtype"]
        d["tokenizer_source"] = args.tokenizer_source or d["tokenizer_source"]
        recipe = dataclasses.replace(load_recipe(d), notes=recipe.notes)
    for note in recipe.notes:
        print(f"note: {note}", file=sys.stderr)
    out = merge(recipe, args.out, overwrite=args.overwrite, shard_size=args.shard_size,
                device=args.device, progress=not args.quiet)
    print(f"merged {recipe.merge_method} -> {out}")
    print(f"weights hash {out.weights_hash}")
    return 0


def _methods(args) -> int:
    from l2s_kit.merging import PRESETS, list_methods

    for m in list_methods():
        aliases = f" (aliases: {', '.join(m.aliases)})" if m.aliases else ""
        print(f"{m.name}{aliases}\n    {m.title}\n    {m.paper}")
        for p in m.params.values():
            extra = (f" one of {list(p.choices)}" if p.choices else
                     f" in {p.range}" if p.range else "")
            print(f"    {p.name}: {p.type.__name__} = {p.default!r}{extra}"
                  + (f"  ({p.help})" if p.help else ""))
    print("\npresets (the paper's published settings):")
    for name, pr in PRESETS.items():
        print(f"  {name}: {pr['merge_method']} {pr['parameters']}")
    return 0


def _demo(args) -> int:
    from l2s_kit.demo import run_demo

    run_demo(Path(args.workdir), size=args.size)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l2s", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"l2s_kit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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
    p.add_argument("--out-dtype", dest="out_dtype", choices=["float32", "float16", "bfloat16"],
                   help="stored dtype (default: as the base)")
    p.add_argument("--tokenizer-source", dest="tokenizer_source",
                   help="folder to copy tokenizer files from (default: the base)")
    p.add_argument("--shard-size", default=None, help="largest shard, e.g. 2GB (default 2GB)")
    p.add_argument("--device", default=None, help="cpu (default) or cuda[:N]")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_merge)

    p = sub.add_parser("methods", help="list merge methods, their parameters and presets")
    p.set_defaults(func=_methods)

    p = sub.add_parser("demo", help="run the end-to-end demo on generated tiny checkpoints")
    p.add_argument("--workdir", default="data/demo", help="where checkpoints and merges go")
    p.add_argument("--size", default="small", help="checkpoint shape (tiny, small)")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except L2SError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no partial output was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
