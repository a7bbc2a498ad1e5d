"""Checkpoints named as users name them: a local folder, or a Hugging Face hub id
(``Qwen/Qwen2.5-Math-7B``, pinned with ``@revision``: ``Qwen/Qwen2.5-Math-7B@a1b2c3d``).

A hub id is resolved through ``huggingface_hub``: downloaded once into its cache (with its
progress bar; only the files a merge or an evaluation reads: configs, safetensors weights and
their index, tokenizer files and chat templates), then read from there. ``HF_HUB_OFFLINE=1``
and ``HF_HUB_CACHE`` / ``HF_HOME`` are honoured; an id that is neither cached nor reachable is a
one-line error naming the id and how to download it. A local folder always wins over a hub id of
the same spelling.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from l2s_kit.errors import CheckpointError

# owner/name, each of letters, digits, '-', '_' and '.', then an optional @revision
HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?")
# what the kit reads from a checkpoint: no .bin, .pth or .gguf duplicates of the weights
PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]


def hub_id(value: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) when ``value`` is spelled as a hub id and is no local path."""
    if not isinstance(value, str) or Path(os.path.expanduser(value)).exists():
        return None
    m = HUB_ID.fullmatch(value)
    if m is None or value.startswith((".", "/", "~")):
        return None
    return m.group("repo"), m.group("rev")


def resolve_checkpoint(value: str | os.PathLike, what: str = "checkpoint",
                       progress: bool = True) -> str:
    """``value`` itself when it is not a hub id (a local path, checked by the caller), else the
    folder of its snapshot in the hub cache, downloaded when missing and allowed."""
    found = hub_id(str(value))
    if found is None:
        return str(value)
    repo, revision = found
    try:
        import huggingface_hub
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - a dependency of transformers
        raise CheckpointError(f"{what} {value}: reading hub ids needs huggingface_hub "
                              "(pip install huggingface_hub)") from None
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    if not progress:
        disable_progress_bars()
    try:
        return huggingface_hub.snapshot_download(repo, revision=revision,
                                                 allow_patterns=PATTERNS)
    except LocalEntryNotFoundError:
        cache = huggingface_hub.constants.HF_HUB_CACHE
        offline = "HF_HUB_OFFLINE=1 is set" if huggingface_hub.constants.HF_HUB_OFFLINE \
            else "the hub cannot be reached"
        raise CheckpointError(
            f"{what} {value}: not in the local hub cache ({cache}) and {offline}, and no local "
            f"folder has that name; check the path, or download the hub id where the hub is "
            f"reachable with `hf download {repo}"
            f"{' --revision ' + revision if revision else ''}` (it lands in that cache)") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise CheckpointError(f"{what} {value}: could not be fetched from the hub "
                              f"({' '.join(str(e).split())[:200]}); check the id and revision, "
                              "or give a local checkpoint folder") from None
    finally:
        if not progress:
            enable_progress_bars()


def place_in_cache(cache: str | os.PathLike, folders: dict[str, str | os.PathLike],
                   commit: str = "0" * 40) -> Path:
    """Put local checkpoint folders into a hub cache under hub ids, laid out as the hub client
    lays it out (``models--owner--name/refs/main`` naming ``snapshots/<commit>/``), so that
    anything that takes hub ids (``l2s merge``, mergekit, lm-evaluation-harness) finds them
    offline with ``HF_HUB_OFFLINE=1 HF_HUB_CACHE=<cache>``. Returns the cache folder. An id
    already there is refused (nothing in a cache is replaced)."""
    import shutil

    cache = Path(cache)
    for repo, folder in folders.items():
        if hub_id(repo) is None and HUB_ID.fullmatch(repo) is None:
            raise CheckpointError(f"{repo!r} is not a hub id (owner/name)")
        entry = cache / ("models--" + repo.split("@")[0].replace("/", "--"))
        if entry.exists():
            raise CheckpointError(f"{repo} is already in the hub cache {cache} ({entry}); "
                                  "remove it first")
        (entry / "refs").mkdir(parents=True)
        (entry / "refs" / "main").write_text(commit)
        shutil.copytree(folder, entry / "snapshots" / commit)
    return cache
