"""The README.md model card written next to every merged checkpoint."""

from __future__ import annotations

import datetime as _dt

from l2s_kit.version import __version__


def _input_rows(recipe, inputs: list) -> list[str]:
    """The card's table of inputs: role (with each model's weight and parameters), path, and
    the name the input's own config gives."""
    from l2s_kit.io.shared import md_text, shown_path
    from l2s_kit.merging.schedule import describe

    def named(i: int) -> str:  # an input's name in its own config (transformers saves its path)
        return md_text(shown_path(inputs[i].config.get("_name_or_path", "") or "-"))

    rows = [f"| base | `{shown_path(recipe.base_model)}` | {named(0)} |"]
    for i, m in enumerate(recipe.models):
        given = {"weight": m.weight, **{k: v for k, v in m.parameters.items() if k != "weight"}}
        label = ", ".join(f"{k} {v:g}" if not isinstance(v, list) else
                          describe({k: v})[0] for k, v in given.items())
        rows.append(f"| model {i + 1} ({label}) | `{shown_path(m.model)}` | {named(i + 1)} |")
    return rows


def _method_lines(recipe) -> list[str]:
    """The method, what it wraps, its parameters and layer schedules."""
    from l2s_kit.merging.schedule import describe

    method = recipe.method
    params = ", ".join(f"{k} = {v}" for k, v in recipe.parameters.items()) or "none"
    wrapped = []
    if method.wraps:
        inner = method.split(recipe.parameters)[0]
        wrapped = [f"- Applied on top of: `{inner.name}` ({inner.title}), {inner.paper}"]
    per_model = any(set(m.parameters) - {"weight"} for m in recipe.models)
    return [f"- Method: `{method.name}`, {method.paper}", *wrapped,
            f"- Parameters: {params}" + ("; a value a model gives under its parameters (see "
                                          "Inputs) replaces it for that model" if per_model else ""),
            *[f"- Layer schedule: {line}" for line in describe(recipe.parameters)]]


def _tokenizer_line(recipe, tokenizer_files: list[str]) -> str:
    from l2s_kit.io.shared import shown_path

    return ("- Tokenizer files and generation_config.json from: "
            + ("the union of the inputs' vocabularies (System 1's tokens first; "
               "generation_config.json from System 1)" if recipe.tokenizer_source == "union" else
               f"`{shown_path(recipe.source_path(recipe.tokenizer_source))}`"
               + {"base": " (System 1)", "model": " (System 2)"}.get(recipe.tokenizer_source, ""))
            + (f" ({', '.join(tokenizer_files)})" if tokenizer_files else " (none found)"))


def model_card(recipe, weights_hash: str, inputs: list, notes: list[str],
               tokenizer_files: list[str]) -> str:
    """Markdown card: the recipe, the method's paper, the inputs, version and the weights' hash."""
    from l2s_kit.io.shared import shown_paths

    method = recipe.method
    lines = [
        "---", "library_name: transformers", "tags: [merge, l2s_kit, long-to-short]", "---",
        f"# {recipe.name or 'Merged model'}",
        "",
        f"Merged with **{method.name}** ({method.title}) by l2s_kit {__version__} "
        f"on {_dt.date.today().isoformat()}.",
        "",
        *_method_lines(recipe),
        f"- Compute dtype: {recipe.dtype}; stored dtype: {recipe.out_dtype or 'as the base'}",
        f"- Weights hash (SHA-256 over tensor names, dtypes, shapes and bytes): `{weights_hash}`",
        f"- Recipe hash: `{recipe.hash}`",
        _tokenizer_line(recipe, tokenizer_files),
        "", "## Inputs", "", "| role | path | name in config |", "|---|---|---|",
        *_input_rows(recipe, inputs),
        "", "## Recipe", "", "```yaml", recipe.to_yaml().rstrip(), "```", "",
        "Reproduce with `l2s merge recipe.yaml --out DIR` (the recipe as run, with its paths on "
        "the machine that merged, is saved as `l2s_recipe.yaml`; paths here are shown by name).",
    ]
    all_notes = [*recipe.notes, *notes]
    if all_notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in all_notes]]
    inputs_given = [recipe.base_model, *(m.model for m in recipe.models),
                    *(str(i.path) for i in inputs), recipe.source_path(recipe.tokenizer_source)]
    return shown_paths("\n".join(lines) + "\n", inputs_given)
