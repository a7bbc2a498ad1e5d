"""The vLLM backend against the transformers backend's contract, with a stand-in ``vllm`` module.

vLLM needs CUDA, so ``vllm`` here is a fake module whose ``LLM`` decodes the tiny checkpoint token
by token with the semantics vLLM documents for ``SamplingParams`` (``max_tokens``, ``stop`` with
``include_stop_str_in_output``, ``stop_token_ids``, EOS kept in ``token_ids``, ``skip_special_tokens``,
per-request ``seed``). The backend's requests are checked field by field, and its outputs must equal
the transformers backend's on the same checkpoint (greedy, with and without stop strings).
"""

from __future__ import annotations

import subprocess
import sys
import types
from dataclasses import dataclass

import pytest
import torch
from test_evaluate import MAX_NEW, PROMPTS, varied_model  # noqa: F401  (fixture)

from l2s_kit.evaluate import GenerationError, GenerationSettings, TransformersBackend, evaluate
from l2s_kit.evaluate.backends import sample_seed
from l2s_kit.evaluate.vllm_backend import R1_SAMPLING, VLLMBackend


@dataclass
class Completion:
    text: str
    token_ids: list
    finish_reason: str


@dataclass
class RequestOutput:
    outputs: list


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class FakeLLM:
    """Decodes one request at a time with a Hugging Face model, as vLLM's engine would."""

    def __init__(self, **kwargs):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.kwargs = kwargs
        self.model = AutoModelForCausalLM.from_pretrained(kwargs["model"], dtype=torch.float32)
        self.tokenizer = AutoTokenizer.from_pretrained(kwargs["tokenizer"])
        self.calls = []

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((list(prompts), list(params)))
        return [RequestOutput([self._one(p, sp)]) for p, sp in zip(prompts, params)]

    @torch.inference_mode()
    def _one(self, prompt, sp) -> Completion:
        ids = self.tokenizer(prompt)["input_ids"]
        eos = {self.model.generation_config.eos_token_id, *sp.stop_token_ids}
        gen = torch.Generator().manual_seed(sp.seed)
        out: list[int] = []
        text = ""
        for _ in range(sp.max_tokens):
            logits = self.model(torch.tensor([ids + out])).logits[0, -1]
            if sp.temperature == 0:
                tok = int(logits.argmax())
            else:
                probs = torch.softmax(logits / sp.temperature, -1)
                tok = int(torch.multinomial(probs, 1, generator=gen))
            out.append(tok)
            text = self.tokenizer.decode(out, skip_special_tokens=sp.skip_special_tokens)
            if tok in eos and not sp.ignore_eos:
                return Completion(text, out, "stop")
            hits = [(text.find(s) + len(s), s) for s in sp.stop if s in text]
            if hits:
                end, s = min(hits)
                return Completion(text[:end] if sp.include_stop_str_in_output
                                  else text[:end - len(s)], out, "stop")
        return Completion(text, out, "length")


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeSamplingParams)
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return mod


@pytest.fixture
def vbackend(fake_vllm, varied_model):  # noqa: F811
    return VLLMBackend(varied_model, tensor_parallel_size=2, dtype="bfloat16", max_model_len=4096,
                       progress=False)


@pytest.fixture(scope="module")
def tbackend(varied_model):  # noqa: F811
    return TransformersBackend(varied_model, progress=False)


def test_vllm_is_imported_only_when_chosen():
    code = ("import sys, l2s_kit.evaluate, l2s_kit.evaluate.vllm_backend, l2s_kit.cli; "
            "print('vllm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_vllm_says_how_to_install(monkeypatch, varied_model):  # noqa: F811
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(GenerationError, match=r"pip install 'l2s_kit\[vllm\]'"):
        VLLMBackend(varied_model)


def test_engine_arguments(vbackend, varied_model, fake_vllm, tmp_path):  # noqa: F811
    kw = vbackend.llm.kwargs
    assert kw["model"] == kw["tokenizer"] == str(varied_model)
    assert (kw["tensor_parallel_size"], kw["dtype"], kw["max_model_len"]) == (2, "bfloat16", 4096)
    assert kw["trust_remote_code"] is False and kw["seed"] == 0
    with pytest.raises(GenerationError, match="no config.json"):
        VLLMBackend(tmp_path)
    with pytest.raises(GenerationError, match="tensor_parallel_size"):
        VLLMBackend(varied_model, tensor_parallel_size=0)


def test_requests_r1_sampling(vbackend):
    settings = GenerationSettings(**R1_SAMPLING, n=3, seed=7, max_new_tokens=8192,
                                  stop=("<pad>", "So"))
    reqs = vbackend.requests(PROMPTS[:2], settings)
    assert [(i, j) for i, j, _ in reqs] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    for i, j, kw in reqs:
        assert kw["seed"] == sample_seed(7, PROMPTS[i], j)  # the transformers backend's seed
        assert (kw["n"], kw["temperature"], kw["top_p"], kw["max_tokens"]) == (1, 0.6, 0.95, 8192)
        assert kw["stop"] == ["So"] and kw["stop_token_ids"] == [0]  # <pad> is special: by id
        assert kw["include_stop_str_in_output"] and kw["skip_special_tokens"]
        assert (kw["repetition_penalty"], kw["top_k"], kw["ignore_eos"]) == (1.0, -1, False)
    greedy = vbackend.requests(PROMPTS[:1], GenerationSettings(top_p=0.5))
    assert greedy[0][2]["temperature"] == 0.0 and greedy[0][2]["top_p"] == 1.0


@pytest.fixture(scope="module")
def full_texts(tbackend) -> list[str]:
    return [g.text for (g,) in tbackend.generate(PROMPTS, GenerationSettings(
        max_new_tokens=MAX_NEW))]


@pytest.fixture(scope="module")
def mid_stop(full_texts) -> str:
    """Two characters from the middle of the longest greedy output: a stop string that cuts it."""
    longest = max(full_texts, key=len)
    return longest[len(longest) // 2:len(longest) // 2 + 2]


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["none", "special", "mid"])
def test_greedy_outputs_equal_the_transformers_backend(vbackend, tbackend, mid_stop, full_texts,
                                                       stop):
    stops = {"none": (), "special": ("<pad>",), "mid": (mid_stop,)}[stop]
    settings = GenerationSettings(max_new_tokens=MAX_NEW, stop=stops, batch_size=5)
    got = vbackend.generate(PROMPTS, settings)
    want = tbackend.generate(PROMPTS, settings)
    assert got == want  # text, n_tokens, finish_reason of every sample
    assert {g.finish_reason for (g,) in got} == {"stop", "length"}
    if stop == "mid":
        cut = [g.text for (g,), full in zip(got, full_texts) if len(g.text) < len(full)]
        assert cut and all(t.endswith(mid_stop) for t in cut)


def test_samples_depend_on_seed_prompt_and_index_only(vbackend):
    settings = GenerationSettings(temperature=1.0, n=3, seed=3, max_new_tokens=6)
    three = vbackend.generate(PROMPTS[:4], settings)
    again = vbackend.generate(PROMPTS[2:4], settings)
    one = vbackend.generate(PROMPTS[:4], GenerationSettings(temperature=1.0, n=1, seed=3,
                                                            max_new_tokens=6))
    assert again == three[2:4]  # other prompts in the batch do not matter
    assert [s[:1] for s in three] == one  # sample 0 does not depend on n
    assert len({g.text for s in three for g in s}) > 4  # samples differ


def test_evaluate_rows_are_the_same_with_either_backend(vbackend, tbackend, tmp_path):
    rows = [{"id": str(k), "prompt": p, "gold": "7", "dataset": "d", "level": 1 + k % 2}
            for k, p in enumerate(PROMPTS[:5])]
    settings = GenerationSettings(max_new_tokens=MAX_NEW)
    a = evaluate(None, rows, tmp_path / "v.jsonl", backend=vbackend, settings=settings,
                 model_name="m", progress=False)
    b = evaluate(None, rows, tmp_path / "t.jsonl", backend=tbackend, settings=settings,
                 model_name="m", progress=False)
    assert a.columns.tolist() == b.columns.tolist()
    assert a.to_dict("records") == b.to_dict("records")


def test_cli_eval_with_the_vllm_backend(fake_vllm, varied_model, tmp_path, capsys):  # noqa: F811
    from l2s_kit.cli import main
    from l2s_kit.evaluate import load_responses

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(f'{{"id": "{k}", "prompt": "{p}", "gold": "7"}}\n'
                            for k, p in enumerate(PROMPTS[:3])))
    out = tmp_path / "r.jsonl"
    assert main(["eval", str(varied_model), "--data", str(data), "--out", str(out), "--backend",
                 "vllm", "--tensor-parallel", "4", "--max-new-tokens", "5", "--quiet"]) == 0
    df = load_responses(out)
    assert len(df) == 3 and (df["n_tokens"] <= 5).all()
    assert "3 responses" in capsys.readouterr().out
