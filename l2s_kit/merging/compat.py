"""Does a pair fit together? Every difference between the checkpoints, with a verdict, before any
tensor is read (``l2s check BASE MODEL [MODEL ...]``; ``l2s merge`` runs the same check).

Users of the paper's own scripts met these: the merged model took System 1's ``config.json``
(a context of 4096 where R1-Distill has 131072) and System 1's tokenizer (no ``<think>``; the two
tokenizers put different special tokens at the same ids); mergekit's most reported problems are
vocabulary mismatches and tied embeddings. The check compares, base against each model:

- **architecture and tensors**: the merge engine's own plan (``plan_merge``): model type, tensor
  names and shapes, tied embeddings, added vocabulary rows;
- **config.json**: every key that differs (context length, rope, sliding window, bos / eos / pad
  ids, vocabulary size, tying, ...); context length, rope and sliding window are one choice;
- **tokenizers** (``tokenizer.json`` / ``tokenizer_config.json``): every token only one side has
  (e.g. ``<think>``), tokens that differ at the same id (special and regular apart), special
  tokens, the chat template wherever it lives (``chat_template.jinja``, ``chat_template.json``,
  ``tokenizer_config.json``);
- **generation_config.json** and the weights' **dtypes**.

Verdicts: ``blocks`` (the merge refuses, or its rows would mix different tokens), ``takes`` (the
merge will take it from one side: the row says which) and ``harmless``. ``blocks`` and ``takes``
rows are what a user should read.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from l2s_kit.errors import CheckpointError, L2SError
from l2s_kit.io import GENERATION_CONFIG, Checkpoint

BLOCKS, TAKES, HARMLESS = "blocks", "takes", "harmless"
# config.json keys that only record where a file came from
IGNORED_KEYS = {"_name_or_path", "transformers_version", "_commit_hash"}
ARCHITECTURE_KEYS = {"model_type", "architectures", "hidden_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "intermediate_size", "head_dim"}
DTYPE_KEYS = {"torch_dtype", "dtype"}


@dataclass(frozen=True)
class Difference:
    area: str       # architecture, config, tokenizer, generation_config, dtype
    item: str       # the key, or what differs
    base: object
    model: object
    verdict: str    # blocks, takes, harmless
    note: str


def _short(v, n: int = 60) -> str:
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
    return s if len(s) <= n else s[:n - 1] + "…"


def _json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise L2SError(f"{path}: not valid JSON ({e})") from None
    return d if isinstance(d, dict) else None


def _vocab(folder: Path) -> tuple[dict[int, str], set[int]] | None:
    """id → token of ``tokenizer.json`` (model vocabulary and added tokens), and the special ids."""
    tok = _json(folder / "tokenizer.json")
    if tok is None:
        return None
    vocab = (tok.get("model") or {}).get("vocab") or {}
    if isinstance(vocab, list):  # unigram: [[piece, score], ...]
        ids = {i: p[0] for i, p in enumerate(vocab)}
    else:
        ids = {int(i): t for t, i in vocab.items()}
    special = set()
    for a in tok.get("added_tokens") or []:
        ids[int(a["id"])] = a["content"]
        if a.get("special"):
            special.add(int(a["id"]))
    return ids, special


def _names(tokens, n: int = 12) -> str:
    tokens = list(tokens)
    shown = ", ".join(tokens[:n])
    return shown + (f" and {len(tokens) - n} more" if len(tokens) > n else "") if tokens else "none"


# where a chat template lives, in the order transformers reads them
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")


def chat_template(folder: Path) -> tuple[str | None, str | None]:
    """(the chat template's text, the file it is in) of a checkpoint folder: ``chat_template.jinja``,
    else ``chat_template.json``, else ``tokenizer_config.json``'s ``chat_template`` (a list of
    named templates is written as JSON); (None, None) without one."""
    for name in CHAT_TEMPLATE_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".jinja"):
            try:
                return path.read_text(encoding="utf-8"), name
            except UnicodeDecodeError as e:
                raise L2SError(f"{path}: not UTF-8 text ({e})") from None
        value = (_json(path) or {}).get("chat_template")
        if value:
            return (value if isinstance(value, str) else json.dumps(value, sort_keys=True)), name
    return None, None


def pick_chat_template(choice: str, folders: list, own: str | os.PathLike
                       ) -> tuple[str | None, str]:
    """The chat template a recipe's ``chat_template`` gives the merged folder, and a note saying
    how it was chosen. ``auto``: the template most of the inputs (``folders``) have, compared
    stripped as mergekit does; among equally common ones, the tokenizer source's (``own``) if it
    is one of them, else the first input's; None when no input has one. A built-in name
    (``chatml``): mergekit's template of that name. Anything else is the template itself."""
    if choice == "auto":
        found = [(str(f), (chat_template(Path(f))[0] or "").strip()) for f in folders]
        counts = Counter(t for _, t in found if t)
        if not counts:
            return None, "chat_template auto: no input has a chat template"
        top = max(counts.values())
        tied = [t for t in counts if counts[t] == top]
        mine = dict(found).get(str(own)) or (chat_template(Path(own))[0] or "").strip()
        text = mine if mine in tied else tied[0]
        who = [f for f, t in found if t == text]
        return text, (f"chat_template auto: the template {top} of the {len(folders)} inputs have "
                      f"({', '.join(who)})" + (f"; {len(tied)} are equally common, the "
                                              "tokenizer's own or the first is taken"
                                              if len(tied) > 1 else ""))
    from l2s_kit.merging.vocab import BUILTIN_TEMPLATES

    if choice in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[choice], f"chat_template {choice}: mergekit's built-in template"
    return choice, "chat_template: the recipe's own template"


def _first_difference(a: str, b: str) -> str:
    """The first line where two texts differ, as 'line N: «a» / «b»'."""
    la, lb = a.splitlines(), b.splitlines()
    for i in range(max(len(la), len(lb))):
        x, y = (la[i] if i < len(la) else "(end)"), (lb[i] if i < len(lb) else "(end)")
        if x != y:
            return f"line {i + 1}: {_short(x.strip(), 50)!r} / {_short(y.strip(), 50)!r}"
    return "whitespace only"


def _special_tokens(cfg: dict | None) -> dict:
    if not cfg:
        return {}
    out = {}
    for k in ("bos_token", "eos_token", "pad_token", "unk_token"):
        v = cfg.get(k)
        out[k] = v.get("content") if isinstance(v, dict) else v
    return out


def _open_pair(base: Path, model: Path) -> tuple[list, list[Difference]]:
    """The two checkpoints opened, and what blocks for an unreadable or inconsistent one (a
    shard index that does not match its shards): then nothing else can be compared."""
    opened, unreadable = [], []
    for what, folder in (("base", base), ("model", model)):
        try:
            opened.append(Checkpoint(folder))
        except CheckpointError as e:
            unreadable.append(Difference("checkpoint", what, "", "", BLOCKS, str(e)))
    return opened, unreadable


def _config_verdict(key: str, label, config_keys: dict, config_source: str,
                    tokenizer_source: str) -> tuple[str, str]:
    """(verdict, note) of a config.json key the two sides give differently."""
    from l2s_kit.merging.recipe import CONTEXT_KEYS

    if key in ARCHITECTURE_KEYS:
        return BLOCKS, "a different architecture: the tensors cannot be merged"
    if key in DTYPE_KEYS:
        return HARMLESS, "merges compute in float32 and write the recipe's out_dtype"
    source = label(config_keys.get(key, config_source))
    if key in CONTEXT_KEYS:
        return TAKES, (f"context length, rope and sliding window are one choice: the merged "
                       f"config.json takes all of {', '.join(CONTEXT_KEYS)} from {source}")
    if key == "vocab_size" and tokenizer_source == "union":
        return TAKES, ("the merged embedding has one row per token of the union of both "
                       "vocabularies; config.json says its size")
    if key == "vocab_size":
        return TAKES, (f"embedding rows beyond the smaller vocabulary come from the larger "
                       f"model only; config.json from {source}")
    return TAKES, f"the merged config.json takes the value of {source}"


def _config_differences(cb: dict, cm: dict, label, config_keys: dict, config_source: str,
                        tokenizer_source: str) -> list[Difference]:
    out = []
    for key in sorted((set(cb) | set(cm)) - IGNORED_KEYS):
        vb, vm = cb.get(key, "(absent)"), cm.get(key, "(absent)")
        if vb != vm:
            verdict, note = _config_verdict(key, label, config_keys, config_source,
                                            tokenizer_source)
            out.append(Difference("config", key, vb, vm, verdict, note))
    return out


def _generation_differences(b: Path, m: Path, tok_from: str) -> list[Difference]:
    out = []
    gb, gm = _json(b / GENERATION_CONFIG) or {}, _json(m / GENERATION_CONFIG) or {}
    for key in sorted((set(gb) | set(gm)) - IGNORED_KEYS):
        vb, vm = gb.get(key, "(absent)"), gm.get(key, "(absent)")
        if vb != vm:
            out.append(Difference("generation_config", key, vb, vm, TAKES,
                                  f"the merged folder copies generation_config.json from {tok_from}"))
    return out


def _dtype_differences(cb, cm) -> list[Difference]:
    db = sorted({str(cb.info(n).dtype).removeprefix("torch.") for n in cb.names})
    dm = sorted({str(cm.info(n).dtype).removeprefix("torch.") for n in cm.names})
    if db == dm:
        return []
    return [Difference("dtype", "weights", ", ".join(db), ", ".join(dm), HARMLESS,
                       "merges compute in float32 and write the recipe's out_dtype")]


def pair_differences(base: str | os.PathLike, model: str | os.PathLike, *, config_source: str = "base",
            tokenizer_source: str = "model", config_keys: dict | None = None,
            opened: tuple | None = None, plan: bool = True) -> list[Difference]:
    """Every difference between ``base`` and ``model`` (see the module docstring).
    ``config_source`` / ``tokenizer_source`` / ``config_keys``: what the merged folder will take
    its config.json, tokenizer and generation_config.json, and each listed config.json key from
    ("base", "model" or a folder; the recipe's keys, with the merge's defaults). ``opened``: the
    two as ``Checkpoint`` objects already open (a merge passes its own); ``plan=False`` leaves
    out the architecture's rows (a merge has planned itself)."""
    from l2s_kit.merging.engine import plan_merge
    from l2s_kit.merging.recipe import GENERATION_KEYS

    b, m = Path(base), Path(model)
    from l2s_kit.merging.recipe import same_checkpoint

    if same_checkpoint(str(b), str(m)):
        raise L2SError(f"{model} is the base {base} (the same folder or the same weight files): "
                       "give System 1 and System 2 as two checkpoints")
    if config_keys is None:
        config_keys = {k: "model" for k in GENERATION_KEYS}

    def label(source: str) -> str:
        return {"base": f"base ({b})", "model": f"model ({m})",
                "union": "the union of both vocabularies (base's tokens first, rows matched by "
                         "token)"}.get(source, source)

    tok_from = label(tokenizer_source)
    out: list[Difference] = []
    if opened is None:
        opened, unreadable = _open_pair(b, m)
        if unreadable:
            return unreadable
    cb, cm = opened
    if plan:
        try:
            _, _, notes = plan_merge([cb, cm], None)
            out += [Difference("architecture", "tensors", "", "", TAKES, n) for n in notes]
        except L2SError as e:
            out.append(Difference("architecture", "tensors", "", "", BLOCKS, str(e)))

    out += _config_differences(cb.config, cm.config, label, config_keys, config_source,
                                tokenizer_source)
    out += _tokenizer_differences(b, m, tok_from, tokenizer_source == "union")
    out += _generation_differences(b, m, tok_from)
    out += _dtype_differences(cb, cm)
    return out


def _vocabulary_differences(vb: tuple, vm: tuple, tok_from: str, union: bool
                            ) -> list[Difference]:
    """Tokens only one side has, special tokens, and ids the two give different tokens."""
    out = []
    (ib, sb), (im, sm) = vb, vm
    only_b = [f"{ib[i]} ({i})" for i in sorted(set(ib) - set(im))]
    only_m = [f"{im[i]} ({i})" for i in sorted(set(im) - set(ib))]
    if only_b or only_m:
        out.append(Difference(
            "tokenizer", "tokens only one side has", _names(only_b), _names(only_m), TAKES,
            f"vocabulary size {len(ib)} | {len(im)}; base only: {_names(only_b)}; model only: "
            f"{_names(only_m)}. Their embedding rows come from the side that has them; the "
            f"merged folder takes the tokenizer of {tok_from}"))
    special_b, special_m = {ib[i] for i in sb}, {im[i] for i in sm}
    if special_b != special_m:
        out.append(Difference(
            "tokenizer", "special tokens", _names(sorted(special_b - special_m)),
            _names(sorted(special_m - special_b)), TAKES,
            f"special tokens only in base: {_names(sorted(special_b - special_m))}; only in "
            f"model: {_names(sorted(special_m - special_b))}. The merged folder takes the "
            f"tokenizer of {tok_from}"))
    shared = sorted(set(ib) & set(im))
    differ = [i for i in shared if ib[i] != im[i]]
    special = [i for i in differ if i in sb or i in sm]
    regular = [i for i in differ if i not in special]
    if regular:
        ex = ", ".join(f"{i}: {ib[i]!r} / {im[i]!r}" for i in regular[:3])
        out.append(Difference(
            "tokenizer", "tokens at the same id", f"{len(regular)} differ", ex,
            TAKES if union else BLOCKS,
            "the two vocabularies give different tokens to the same ids; the union matches "
            "their embedding rows by token" if union else
            "the two vocabularies give different tokens to the same ids: their embedding rows "
            "would be merged across different tokens; merge only models with one vocabulary, "
            "or with tokenizer_source: union (rows matched by token)"))
    if special:
        ex = ", ".join(f"{i}: {ib[i]!r} / {im[i]!r}" for i in special[:4])
        out.append(Difference(
            "tokenizer", "special tokens at the same id", f"{len(special)} differ", ex, TAKES,
            f"the merged folder takes the tokenizer of {tok_from}: its special tokens are "
            "the ones the merged model is prompted and stopped with"))
    return out


def _tokenizer_differences(b: Path, m: Path, tok_from: str, union: bool = False
                           ) -> list[Difference]:
    out = []
    vb, vm = _vocab(b), _vocab(m)
    if (vb is None) != (vm is None):
        which = "base" if vb is None else "model"
        out.append(Difference("tokenizer", "tokenizer.json", "absent" if vb is None else "present",
                              "absent" if vm is None else "present", TAKES,
                              f"{which} has no tokenizer.json; the merged folder takes the "
                              f"tokenizer of {tok_from}"))
    if vb is not None and vm is not None:
        out += _vocabulary_differences(vb, vm, tok_from, union)
    tb, tm = _json(b / "tokenizer_config.json"), _json(m / "tokenizer_config.json")
    spb, spm = _special_tokens(tb), _special_tokens(tm)
    for k in sorted(set(spb) | set(spm)):
        if spb.get(k) != spm.get(k):
            out.append(Difference("tokenizer", k, spb.get(k), spm.get(k), TAKES,
                                  f"the merged folder takes {k} from {tok_from}"))
    (ctb, wb), (ctm, wm) = chat_template(b), chat_template(m)
    if ctb != ctm:
        state = ("missing in base" if ctb is None else "missing in model" if ctm is None
                 else f"different ({_first_difference(ctb, ctm)})")
        out.append(Difference("tokenizer", "chat_template",
                              f"{wb}: {_short(ctb, 30)}" if ctb else "(absent)",
                              f"{wm}: {_short(ctm, 30)}" if ctm else "(absent)", TAKES,
                              f"chat template {state}; the merged folder takes the one of {tok_from}"))
    return out


def check_pair(base: str | os.PathLike, models, *, config_source: str = "base",
               tokenizer_source: str = "model", config_keys: dict | None = None) -> pd.DataFrame:  # noqa: F821
    """:func:`pair_differences` of ``base`` with every model as a table: model, area, item, base, model
    value, verdict, note (verdicts ``blocks`` first)."""
    import pandas as pd  # only here: `l2s merge` stays free of pandas

    models = [models] if isinstance(models, (str, os.PathLike)) else list(models)
    rows = []
    for mod in models:
        for d in pair_differences(base, mod, config_source=config_source,
                         tokenizer_source=tokenizer_source, config_keys=config_keys):
            rows.append({"model": str(mod), "area": d.area, "item": d.item,
                         "base_value": _short(d.base), "model_value": _short(d.model),
                         "verdict": d.verdict, "note": d.note})
    df = pd.DataFrame(rows, columns=["model", "area", "item", "base_value", "model_value",
                                     "verdict", "note"])
    order = {BLOCKS: 0, TAKES: 1, HARMLESS: 2}
    return df.sort_values("verdict", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
