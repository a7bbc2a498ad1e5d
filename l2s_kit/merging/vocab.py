"""The tokenizer side of a merge: mergekit's built-in chat templates, and the union of the
inputs' vocabularies (mergekit's ``tokenizer: {source: union}``) and the row
each input's embedding gives every token of it.

The output tokenizer is the base's (System 1's) with every token another input has and it lacks
added after its own, special tokens keeping their flags: mergekit's ``build_union_tokenizer``.
Each input's embedding and head are then read in the union's order (``Union.own``): an input's
row of a token it has is its own; for a token it lacks, mergekit's rule
(``PermutedEmbeddings.assign_embedding_sources``) gives the row (``Union.fallback``):

- a token only one input has: that input's row, so every input agrees on it and a merge keeps
  it as that input has it (System 2's ``<think>`` stays System 2's);
- a token several inputs have, the base among them: the base's row;
- a token several inputs have, not the base: the mean of their rows.

A token at an id at or past an input's ``vocab_size`` (its config) or its embedding's rows is
not the input's (padding rows). The output has one row per token of the union (mergekit's
``pad_to_multiple_of`` is not taken).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from l2s_kit.errors import CheckpointError

# mergekit's built-in chat templates that l2s_kit takes by name (chat_template: chatml)
BUILTIN_TEMPLATES = {
    "chatml": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
              "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}\n{% if "
              "add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
}



@dataclass
class Union:
    """The union vocabulary: its tokenizer files (``files``: name → bytes), its size, and per
    input (base first) the row of each union token in that input (-1 where it lacks it)."""

    files: dict[str, bytes]
    rows: int
    own: list[torch.Tensor]
    fallback: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # row -> sources
    notes: list[str] = field(default_factory=list)


def _tokenizer(path: str):
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - a tokenizer that does not load, whatever the reason
        raise CheckpointError(f"tokenizer_source union: the tokenizer of {path} does not load "
                              f"({' '.join(str(e).split())[:200]}); give tokenizer_source base "
                              "or model instead") from None


def _tokens(toks: list, vocabs: list[dict]) -> tuple[dict, dict]:
    """(plain tokens, added tokens by content), each in the order the inputs first give it."""
    plain: dict[str, None] = {}
    added: dict[str, object] = {}
    for tok, vocab in zip(toks, vocabs):
        decoder = tok.added_tokens_decoder
        added_here = {a.content for a in decoder.values()}
        for t in sorted(vocab, key=vocab.get):
            if t not in added_here:
                plain.setdefault(t)
        for i, a in sorted(decoder.items()):
            if a.content in vocab and vocab[a.content] == i:
                added.setdefault(a.content, a)
    return plain, added


def _row_sources(vocab: dict, vocabs: list[dict], rows: int) -> tuple[list, dict]:
    """Per input, the row of each union token in that input (-1: it lacks it), and for a row
    some input lacks, the inputs it is taken from (the base's alone where the base has it)."""
    own = []
    for v in vocabs:
        ids = torch.full((rows,), -1, dtype=torch.long)
        for t, i in vocab.items():
            if t in v:
                ids[i] = v[t]
        own.append(ids)
    fallback: dict[int, list[tuple[int, int]]] = {}
    stacked = torch.stack(own)
    lacking = (stacked < 0).any(0).nonzero().squeeze(1).tolist()
    for r in lacking:
        have = [j for j in range(len(own)) if own[j][r] >= 0]
        if not have:
            continue  # in no input (cannot happen: every union token comes from one)
        if len(have) > 1 and 0 in have:
            have = [0]
        fallback[r] = [(j, int(own[j][r])) for j in have]
    return own, fallback


def build_union(paths: list[str], sizes: list[int]) -> Union:
    """The union of the tokenizers of ``paths`` (base first), each input's tokens limited to ids
    below its size in ``sizes`` (the smaller of its config's ``vocab_size`` and its embedding's
    rows)."""
    toks = [_tokenizer(p) for p in paths]
    vocabs = [{t: i for t, i in tok.get_vocab().items() if i < n} for tok, n in zip(toks, sizes)]
    plain, added = _tokens(toks, vocabs)
    past = sorted(i for i in toks[0].get_vocab().values() if i >= sizes[0])
    if past:
        raise CheckpointError(
            f"tokenizer_source union: the tokenizer of {paths[0]} (the base) has {len(past)} "
            f"tokens at ids {past[0]}.. past its {sizes[0]} embedding rows (config vocab_size); "
            "a union starts from the base's tokenizer, so it must fit the base's rows: give "
            "tokenizer_source base or model instead")
    with tempfile.TemporaryDirectory() as tmp:  # a fresh copy of the base's tokenizer
        toks[0].save_pretrained(tmp)
        out = _tokenizer(tmp)
    base_vocab = vocabs[0]
    new_plain = [t for t in plain if t not in base_vocab and t not in added]
    out.add_tokens(new_plain)
    new_added = [a for t, a in added.items() if t not in base_vocab]
    for a in new_added:
        out.add_tokens([a], special_tokens=bool(getattr(a, "special", False)))
    vocab = out.get_vocab()
    rows = max(vocab.values()) + 1
    own, fallback = _row_sources(vocab, vocabs, rows)
    with tempfile.TemporaryDirectory() as tmp:
        out.save_pretrained(tmp)
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
    names = [a.content if hasattr(a, "content") else a for a in (*new_plain, *new_added)]
    shown = ", ".join(repr(n) for n in names[:8]) + (f", … ({len(names)} in all)"
                                                     if len(names) > 8 else "")
    notes = [f"tokenizer: the union of the inputs' vocabularies ({rows} tokens): the base's "
             f"{len(base_vocab)}" + (f", then {shown} from the models" if names else "")
             + "; a token only one input has keeps that input's embedding row, one the base "
             "and another input have takes the base's row where an input lacks it (mergekit's "
             "rule)"]
    return Union(files, rows, own, fallback, notes)


def read_rows(read, rows: torch.Tensor) -> torch.Tensor:
    """Rows ``rows`` (any order) of a stored tensor, read as few contiguous runs:
    ``read(slice)`` reads a run of rows."""
    order = torch.argsort(rows)
    sorted_rows = rows[order]
    breaks = (sorted_rows[1:] - sorted_rows[:-1] > 1).nonzero().squeeze(1) + 1
    parts = []
    for run in torch.tensor_split(sorted_rows, breaks.tolist()):
        lo, hi = int(run[0]), int(run[-1]) + 1
        block = read(slice(lo, hi))
        parts.append(block[run - lo])
    got = torch.cat(parts) if len(parts) > 1 else parts[0]
    out = torch.empty_like(got)
    out[order] = got
    return out
