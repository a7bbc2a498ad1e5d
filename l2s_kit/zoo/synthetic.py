"""Synthetic Qwen2-architecture checkpoints: exact tensor names, shapes and file layout, random values.

Used by the tests (tiny), the benchmarks (Qwen2-1.5B / Qwen2.5-7B shapes, GBs on disk) and the
end-to-end merge demo. Nothing is downloaded: tensor names and shapes come from instantiating
``Qwen2ForCausalLM`` on the meta device, values from generators seeded by (seed, tensor name), and
files are streamed to disk one tensor at a time, so a 7B-shaped pair is built in bounded memory.

A *pair* mimics the long-to-short setting: a base (System 1) and a model fine-tuned from it
(System 2): model = base + δ with δ ~ N(0, delta_std), optionally with extra embedding rows
(added tokens) and different embedding tying, as real pairs have.
"""

from __future__ import annotations

from pathlib import Path

import torch

from l2s_kit.io import CheckpointWriter, TensorInfo, natural_key
from l2s_kit.io.names import EMBED, LM_HEAD
from l2s_kit.io.seeds import generator

SHAPES: dict[str, dict] = {
    # hidden, layers, heads, kv heads, mlp, vocab: small enough for unit tests
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=64, vocab_size=64),
    "small": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=512, vocab_size=512),
    "qwen2-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                       tie_word_embeddings=True),
    "qwen2-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                       num_key_value_heads=2, intermediate_size=8960, vocab_size=151936,
                       tie_word_embeddings=True),
    "qwen2.5-math-7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                            num_key_value_heads=4, intermediate_size=18944, vocab_size=152064,
                            tie_word_embeddings=False),
}
WORDS = ["<pad>", "<eos>", "<unk>", "Q", "A", "+", "-", "*", "=", ".", ",", "Wait", "let", "me",
         "double-check", "So", "the", "answer", "is"] + [str(d) for d in range(10)]


def qwen2_config(shape: str | dict = "tiny", **overrides) -> dict:
    """A Qwen2 ``config.json`` dict of the named shape (see ``SHAPES``)."""
    from transformers import Qwen2Config

    dims = dict(SHAPES[shape]) if isinstance(shape, str) else dict(shape)
    dims.setdefault("tie_word_embeddings", True)
    cfg = Qwen2Config(max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6,
                      bos_token_id=1, eos_token_id=1, pad_token_id=0, **{**dims, **overrides})
    d = cfg.to_dict()
    d["architectures"] = ["Qwen2ForCausalLM"]
    d["torch_dtype"] = "float32"
    return d


def tensor_infos(config: dict, dtype: torch.dtype) -> list[TensorInfo]:
    """The names and shapes a ``Qwen2ForCausalLM`` of ``config`` stores (built on the meta device)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**config))
    sd = model.state_dict()
    if config.get("tie_word_embeddings"):
        sd.pop(LM_HEAD, None)
    return [TensorInfo(n, dtype, tuple(sd[n].shape)) for n in sorted(sd, key=natural_key)]


def _base_value(info: TensorInfo, seed: int, rows: int | None = None) -> torch.Tensor:
    shape = (rows, *info.shape[1:]) if rows is not None else info.shape
    g = generator(seed, "base", info.name)
    if info.name.endswith("norm.weight"):
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    return 0.02 * torch.randn(shape, generator=g)


def save_word_tokenizer(path: Path, vocab_size: int) -> None:
    """A word-level tokenizer (``PreTrainedTokenizerFast``) so generation works offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = WORDS[: max(4, min(len(WORDS), vocab_size))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")
    fast.save_pretrained(path)


def make_pair(out_dir: str | Path, shape: str | dict = "tiny", *, seed: int = 0,
              dtype: torch.dtype = torch.float32, delta_std: float = 0.005,
              base_tied: bool | None = None, model_tied: bool | None = None,
              extra_rows: int = 0, shard_size: int = 2 * 10**9, tokenizer: bool = True,
              progress: bool = False, delta_seed: int | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/base`` and ``out_dir/model`` (= base + δ) and return both paths.

    ``extra_rows`` adds rows to the model's embedding (and lm_head) as added tokens do;
    ``base_tied`` / ``model_tied`` override ``tie_word_embeddings`` per checkpoint;
    ``delta_seed`` (default ``seed``) draws δ: pairs of one seed and other delta seeds share the
    base, so their models are several fine-tunes of one base.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    cfg = qwen2_config(shape)
    tied = cfg["tie_word_embeddings"]
    base_cfg = {**cfg, "tie_word_embeddings": tied if base_tied is None else base_tied}
    model_cfg = {**cfg, "tie_word_embeddings": tied if model_tied is None else model_tied,
                 "vocab_size": cfg["vocab_size"] + extra_rows}
    for c in (base_cfg, model_cfg):
        c["torch_dtype"] = str(dtype).removeprefix("torch.")
    b_infos = tensor_infos(base_cfg, dtype)
    m_infos = tensor_infos(model_cfg, dtype)
    vocab = cfg["vocab_size"]
    paths = out_dir / "base", out_dir / "model"
    with CheckpointWriter(paths[0], b_infos, shard_size) as wb, \
            CheckpointWriter(paths[1], m_infos, shard_size) as wm:
        b_names = {i.name for i in b_infos}
        m_names = {i.name for i in m_infos}
        by_name = {i.name: i for i in (*b_infos, *m_infos)}
        for name in tqdm(sorted(by_name, key=natural_key), desc="synthetic pair",
                         disable=not progress):
            info = by_name[name]
            is_vocab = name in (LM_HEAD, EMBED)
            # an lm_head fine-tuned from a tied embedding starts from the embedding's values
            src = TensorInfo(EMBED, dtype, info.shape) if is_vocab else info
            base = _base_value(src, seed, vocab if is_vocab else None)
            if name in b_names:
                wb.write(name, base.to(dtype))
            if name in m_names:
                model = base + delta_std * torch.randn(base.shape, generator=generator(
                    seed if delta_seed is None else delta_seed, "delta", name))
                if is_vocab and extra_rows:
                    more = 0.02 * torch.randn((extra_rows, *info.shape[1:]),
                                              generator=generator(seed, "extra", name))
                    model = torch.cat([model, more])
                wm.write(name, model.to(dtype))
                del model
            del base
        for w, c in ((wb, base_cfg), (wm, model_cfg)):
            w.write_json("config.json", c)
            w.write_json("generation_config.json", {"bos_token_id": 1, "eos_token_id": 1,
                                                    "pad_token_id": 0, "do_sample": False})
    if tokenizer:
        for p in paths:
            save_word_tokenizer(p, vocab)
    return paths


def make_family(out_dir: str | Path, shape: str | dict, n: int, *, seed: int = 0,
                delta_std: float = 0.05) -> list[Path]:
    """``n`` checkpoints of one architecture: a base, then ``n - 1`` fine-tunes of it (each the
    base plus its own noise), as ``out_dir/p<i>/``; returns their folders, base first."""
    out: list[Path] = []
    for i in range(1, n):
        base, model = make_pair(Path(out_dir) / f"p{i}", shape, seed=seed, delta_std=delta_std,
                                delta_seed=seed + i)
        out = out or [base]
        out.append(model)
    return out


def example_checkpoints(out_dir: str | Path, spec: dict, shape: dict | None = None) -> dict:
    """The checkpoints a set of recipes names, as tiny stand-ins: ``spec`` is
    ``{families: {name: {layers, ids}}, local: {folder: id}}`` (the first id of a family is its
    base); returns ``{id or local name: folder}``. ``shape``: the dimensions other than the
    layer count (default: hidden size 16, two heads)."""
    dims = shape or dict(hidden_size=16, num_attention_heads=2, num_key_value_heads=1,
                         intermediate_size=32, vocab_size=64)
    folders: dict = {}
    for k, (name, fam) in enumerate(spec["families"].items()):
        made = make_family(Path(out_dir) / name, {**dims, "num_hidden_layers": fam["layers"]},
                           len(fam["ids"]), seed=11 + 100 * k)
        folders.update(zip(fam["ids"], made))
    for local, repo in (spec.get("local") or {}).items():
        folders[local] = folders[repo]
    return folders
