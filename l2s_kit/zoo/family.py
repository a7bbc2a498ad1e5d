"""The built-in family: the shipped checkpoints, building (or reusing) a family under a root, and
its task written as a benchmark folder."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from l2s_kit.zoo import task
from l2s_kit.zoo.spec import FamilySpec

DEFAULT = FamilySpec()  # the built-in family

SHIPPED = Path(__file__).parent / "shipped"  # the default family's checkpoints, in the package

def default_root() -> Path:
    """Where families are cached: ``$L2S_ZOO``, else ``data/zoo`` under the working directory."""
    return Path(os.environ.get("L2S_ZOO", "data/zoo"))


@dataclass(frozen=True)
class Family:
    root: Path
    manifest: dict

    @property
    def system1(self) -> Path:
        return self.root / "system1"

    @property
    def system2(self) -> Path:
        return self.root / "system2"

    def rows(self, split: str = "test", n_per_level: int = 100, seed: int = 0) -> list[dict]:
        """Evaluation rows of the family's task (``id, dataset, level, prompt, gold``)."""
        return task.rows(split, n_per_level, seed)


def spec_hash(spec: FamilySpec) -> str:
    from l2s_kit.version import __version__

    text = json.dumps({"spec": spec.to_dict(), "vocab": task.tokenizer().get_vocab(), "format": _FORMAT,
                       "version": __version__.split(".")[0]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_FORMAT = 2  # bump when the task's text formats change (invalidates cached families)


def save_tokenizer(path: Path) -> None:
    """The family's tokenizer in Hugging Face format (byte-level BPE, as Qwen2.5's): both
    ``AutoTokenizer`` (which loads any Qwen2 checkpoint's tokenizer as ``Qwen2Tokenizer``) and
    ``PreTrainedTokenizerFast`` read it back with the same ids."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=task.tokenizer(), pad_token=task.PAD,
                                   eos_token=task.EOS, unk_token=None, padding_side="left")
    fast.save_pretrained(path)


def make_think_pair(out_dir: str | Path, seed: int = 5, delta_std: float = 0.05
                    ) -> tuple[Path, Path]:
    """A synthetic pair shaped like the paper's at the tokenizer: both with the family's
    byte-level BPE tokenizer (System 1's embedding one row per token), System 2 adding
    ``<think>`` and ``</think>`` after it, with two more rows, as DeepSeek-R1-Distill does.
    Writes ``out_dir/base`` and ``out_dir/model``; returns both."""
    from l2s_kit.zoo.synthetic import SHAPES, make_pair

    probe = json.loads(task.tokenizer().to_str())
    n = 1 + max([*probe["model"]["vocab"].values(), *(a["id"] for a in probe["added_tokens"])])
    base, model = make_pair(out_dir, {**SHAPES["tiny"], "vocab_size": n}, seed=seed,
                            tokenizer=False, extra_rows=2, delta_std=delta_std)
    for f in (base, model):
        save_tokenizer(f)
    tok = json.loads((model / "tokenizer.json").read_text())
    for i, content in enumerate(("<think>", "</think>")):
        tok["added_tokens"].append({"id": n + i, "content": content, "single_word": False,
                                    "lstrip": False, "rstrip": False, "normalized": False,
                                    "special": False})
    (model / "tokenizer.json").write_text(json.dumps(tok))
    return base, model


def _save(model, path: Path) -> str:
    from l2s_kit.io import Checkpoint, weights_hash

    eos, pad = task.token_id(task.EOS), task.token_id(task.PAD)
    model.generation_config.update(do_sample=False, eos_token_id=eos, pad_token_id=pad,
                                   bos_token_id=eos)
    model.save_pretrained(path, safe_serialization=True)
    save_tokenizer(path)
    return weights_hash(Checkpoint(path))


def shipped_family(spec: FamilySpec = DEFAULT) -> Family | None:
    """The family of ``spec`` as shipped with the package, or None when none is (only the default
    family is)."""
    folder = SHIPPED / f"family-{spec_hash(spec)}"
    if not (folder / "manifest.json").is_file():
        return None
    return Family(folder, json.loads((folder / "manifest.json").read_text()))


def build_family(root: str | os.PathLike | None = None, spec: FamilySpec = DEFAULT, *,
                 force: bool = False, progress: bool = True) -> Family:
    """The family of ``spec``: the shipped one when ``root`` is None and the package ships it,
    else built (or reused) under ``root`` (default :func:`default_root`).

    A family already built under ``root`` with the same spec is reused unless ``force``. Training
    is seeded and runs with ``spec.threads`` CPU threads: the same machine gives the same weights;
    another machine may give other weights, and its manifest says whether they match the shipped
    ones (``matches_shipped``).
    """
    if root is None and not force and (shipped := shipped_family(spec)) is not None:
        return shipped
    root = Path(root) if root is not None else default_root()
    folder = root / f"family-{spec_hash(spec)}"
    if (folder / "manifest.json").exists() and not force:
        return Family(folder, json.loads((folder / "manifest.json").read_text()))
    from l2s_kit.io import check_out, check_room

    check_room(folder, 0)  # $L2S_ZOO a file, or a folder that cannot be written
    check_out(folder, True, "family")  # before minutes of training, not after
    if progress:
        print(f"building the family {folder.name} under {root} (System 1, then System 2; a few "
              "minutes on 2 CPU cores)", flush=True)

    import torch
    import transformers

    from l2s_kit.io import atomic_folder
    from l2s_kit.version import __version__
    from l2s_kit.zoo.train import train_system1, train_system2

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        s1, loss1 = train_system1(spec, progress)
        base_steps = len(loss1)
        t1 = time.perf_counter()
        s2, loss2 = train_system2(s1, spec, progress)
        t2 = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    # force: an old build is replaced only once the new one is complete
    with atomic_folder(folder, overwrite=True, kind="family") as tmp:
        hashes = {"system1": _save(s1, tmp / "system1"), "system2": _save(s2, tmp / "system2")}
        manifest = {
            "family": folder.name, "spec": spec.to_dict(), "weights_hash": hashes,
            "parameters": sum(p.numel() for p in s1.parameters()),
            "base_steps": base_steps,
            "matches_shipped": _matches_shipped(spec, hashes),
            "final_loss": {"system1": sum(loss1[-20:]) / 20, "system2": sum(loss2[-20:]) / 20},
            "build_seconds": {"system1": round(t1 - t0, 1), "system2": round(t2 - t1, 1)},
            "l2s_kit": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__,
            "task": {"dataset": task.DATASET, "levels": list(task.LEVELS), "ops": list(task.OPS),
                     "splits": {k: list(v) for k, v in task.SPLITS.items()}},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return Family(folder, manifest)


def _matches_shipped(spec: FamilySpec, hashes: dict) -> bool | None:
    """Whether freshly built weights equal the shipped family's (None: nothing shipped)."""
    shipped = shipped_family(spec)
    return None if shipped is None else shipped.manifest["weights_hash"] == hashes


def export_benchmark(out_dir: str | os.PathLike, n_per_level: int = 100, seed: int = 0, *,
                     overwrite: bool = False) -> Path:
    """Write the family's task as a benchmark folder in the Qwen2.5-Math toolkit's layout:
    ``out_dir/l2s_family/test.jsonl`` (the test split) and ``validation.jsonl`` (the validation
    split), ``n_per_level`` problems per level each, one ``{"id", "question", "answer", "level"}``
    object per line: the rows :meth:`Family.rows` gives, so a study of the family given by paths
    (``l2s study --base … --model … --benchmark l2s_family --data-dir out_dir``) evaluates the same
    problems as the built-in study. Returns the benchmark's folder, which appears complete or not
    at all; an existing one is replaced only with ``overwrite``."""
    from l2s_kit.io import atomic_folder

    folder = Path(out_dir) / task.BENCHMARK
    with atomic_folder(folder, overwrite=overwrite, kind="benchmark") as tmp:
        for split in ("test", "validation"):
            lines = [json.dumps({"id": r["id"], "question": r["prompt"], "answer": r["gold"],
                                 "level": r["level"]}) + "\n"
                     for r in task.rows(split, n_per_level, seed)]
            (tmp / f"{split}.jsonl").write_text("".join(lines))
    return folder
