"""Fuzzing (Hypothesis) of what reads a user's files: the checkpoint reader, the shard index and
the recipe loader. Random headers, offsets, dtypes, shapes, index maps and recipe values give
either the exact merge or exit 2 with one line naming the file or field: never a traceback, never
a changed input."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from l2s_kit.cli import main
from l2s_kit.errors import L2SError
from l2s_kit.merging import load_recipe

FUZZ = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
ALPHA = 0.5
DTYPES = ["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "X9", 7, None]


def _tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w.a": torch.randn(3, 4, generator=g), "w.b": torch.randn(5, generator=g)}


def _folder(root: Path, name: str, seed: int) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    save_file(_tensors(seed), folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "fuzz"}))
    return folder


def _bytes_of(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def _merge(tmp: Path, base: Path, model: Path, capsys) -> tuple[int, str, Path]:
    out = tmp / "out"
    before = {f: _bytes_of(f) for f in (base, model)}
    code = main(["merge", "--method", "task_arithmetic", "--param", f"alpha={ALPHA}", "--base",
                 str(base), "--model", str(model), "--out", str(out), "--quiet", "--force"])
    err = capsys.readouterr().err
    assert {f: _bytes_of(f) for f in (base, model)} == before, "an input changed"
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    return code, err, out


def _expected(base: Path, model: Path) -> dict[str, torch.Tensor]:
    b, m = load_file(base / "model.safetensors"), load_file(model / "model.safetensors")
    return {k: (b[k].float() + ALPHA * (m[k].float() - b[k].float())).to(b[k].dtype) for k in b}


def _check_exact(out: Path, base: Path, model: Path) -> None:
    got = load_file(out / "model.safetensors")
    want = _expected(base, model)
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


header_entry = st.fixed_dictionaries({
    "dtype": st.sampled_from(DTYPES),
    "shape": st.lists(st.integers(-2, 6), max_size=3) | st.just("3x4"),
    "data_offsets": st.lists(st.integers(-4, 200), min_size=0, max_size=3),
})


@FUZZ
@given(entries=st.dictionaries(st.sampled_from(["w.a", "w.b", "w.c", "", "__metadata__"]),
                               header_entry, max_size=3),
       header_len=st.none() | st.integers(0, 2**64 - 1),
       payload=st.integers(0, 200), cut=st.none() | st.integers(0, 400))
def test_random_safetensors_headers_merge_exactly_or_are_named(tmp_path_factory, capsys, entries,
                                                                 header_len, payload, cut):
    tmp = tmp_path_factory.mktemp("hdr")
    base = _folder(tmp, "base", 0)
    model = _folder(tmp, "model", 1)
    raw = json.dumps(entries).encode()
    blob = struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + bytes(payload)
    if cut is not None:
        blob = blob[:cut]
    (model / "model.safetensors").write_bytes(blob)
    code, err, out = _merge(tmp, base, model, capsys)
    if code == 0:  # safetensors itself reads it: the merge is the exact one
        _check_exact(out, base, model)
    else:
        assert "model" in err, err  # names the file (or the model's tensor)


@FUZZ
@given(moves=st.lists(st.tuples(st.sampled_from(["w.a", "w.b", "w.c"]),
                                st.sampled_from(["s1.safetensors", "s2.safetensors",
                                                 "gone.safetensors", "../s1.safetensors", "",
                                                 None, 3])), max_size=3),
       duplicate=st.booleans(), link=st.booleans())
def test_random_shard_indexes_merge_exactly_or_name_the_tensor(tmp_path_factory, capsys, moves,
                                                               duplicate, link):
    tmp = tmp_path_factory.mktemp("idx")
    base = _folder(tmp, "base", 0)
    model = tmp / "model"
    model.mkdir()
    t = _tensors(1)
    (model / "config.json").write_text(json.dumps({"model_type": "fuzz"}))
    shard2 = {"w.b": t["w.b"], **({"w.a": t["w.a"] * 7} if duplicate else {})}
    save_file({"w.a": t["w.a"]}, model / "s1.safetensors", metadata={"format": "pt"})
    if link:  # a shard that is a symbolic link to a file elsewhere is read as that file
        save_file(shard2, tmp / "elsewhere.safetensors", metadata={"format": "pt"})
        (model / "s2.safetensors").symlink_to(tmp / "elsewhere.safetensors")
    else:
        save_file(shard2, model / "s2.safetensors", metadata={"format": "pt"})
    weight_map = {"w.a": "s1.safetensors", "w.b": "s2.safetensors"}
    for name, shard in moves:
        weight_map[name] = shard
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    code, err, out = _merge(tmp, base, model, capsys)
    consistent = (weight_map == {"w.a": "s1.safetensors", "w.b": "s2.safetensors"}
                  and not duplicate)
    assert (code == 0) == consistent, err
    if code == 0:
        got = load_file(out / "model.safetensors")
        b = _tensors(0)
        for k in b:
            assert torch.equal(got[k], b[k] + ALPHA * (t[k] - b[k])), k
    elif duplicate and weight_map == {"w.a": "s1.safetensors", "w.b": "s2.safetensors"}:
        assert "w.a" in err and "s1.safetensors" in err and "s2.safetensors" in err, err


numbers = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**30, 10**30)
           | st.text(max_size=4) | st.none() | st.booleans())
values = numbers | st.lists(numbers, max_size=3) | st.dictionaries(st.text(max_size=3), numbers,
                                                                   max_size=2)


@FUZZ
@given(method=st.sampled_from(["ties", "task_arithmetic", "dare_ties", "della", "slerp", "linear",
                               "nope", "", 5]),
       params=st.dictionaries(st.sampled_from(["k", "alpha", "p", "density", "weight", "t",
                                               "lambda", "epsilon", "normalize", "zz"]), values,
                              max_size=3),
       model_params=st.dictionaries(st.sampled_from(["weight", "density", "k"]), values,
                                    max_size=2),
       extra=st.dictionaries(st.sampled_from(["dtype", "out_dtype", "tokenizer_source",
                                              "shard_size", "slices", "name"]), values,
                             max_size=2))
def test_random_recipe_values_load_or_are_refused_naming_the_field(tmp_path_factory, method,
                                                                     params, model_params, extra):
    tmp = tmp_path_factory.mktemp("recipe")
    base, model = _folder(tmp, "base", 0), _folder(tmp, "model", 1)
    d = {"merge_method": method, "base_model": str(base),
         "models": [{"model": str(model), "parameters": model_params}], "parameters": params,
         **extra}
    try:
        r = load_recipe(d)
    except L2SError as e:
        message = str(e)
        assert message.strip() and "Traceback" not in message
        return
    for v in r.parameters.values():  # what loads is finite and of the method's kind
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, float):
                assert math.isfinite(x)


@pytest.mark.parametrize("where", ["base", "model"])
def test_a_huge_header_length_is_named(tmp_path, capsys, where):
    base, model = _folder(tmp_path, "base", 0), _folder(tmp_path, "model", 1)
    f = (base if where == "base" else model) / "model.safetensors"
    f.write_bytes(struct.pack("<Q", 2**63) + f.read_bytes()[8:])
    code, err, _ = _merge(tmp_path, base, model, capsys)
    assert code == 2 and str(f) in err and "header" in err
