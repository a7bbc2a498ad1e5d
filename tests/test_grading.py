"""Benchmarks, prompts, labelled extraction and math-verify grading with a hard timeout, checked on
the paper's benchmark files and on real model outputs with the Qwen2.5-Math toolkit's grades."""

from __future__ import annotations

import json
import time

import pytest

import l2s_kit.evaluate.grading as grade_mod
from l2s_kit.evaluate import evaluate
from l2s_kit.evaluate.backends import Generation, GenerationError, GenerationSettings
from l2s_kit.evaluate.benchmarks import BENCHMARKS, BenchmarkError, load_benchmark
from l2s_kit.evaluate.extract import extract_labelled
from l2s_kit.evaluate.grading import GradeError, GradeResult, MathGrader, grade_responses
from l2s_kit.evaluate.prompts import (
    INSTRUCTION,
    PromptError,
    get_prompt,
    render_prompt,
)

# Rows per benchmark file and MATH500's rows per level (the data README's table).
SIZES = {"math500": 500, "gsm8k": 1319, "aime24": 30, "amc23": 40, "minerva_math": 272,
         "olympiadbench": 675, "college_math": 2818}
MATH500_LEVELS = {1: 43, 2: 90, 3: 105, 4: 128, 5: 134}


@pytest.fixture(scope="module")
def bench_dir(shared_data):
    return shared_data / "benchmarks"


@pytest.fixture(scope="module")
def grader():
    with MathGrader() as g:
        yield g


@pytest.fixture(scope="module")
def reference_grader():
    with MathGrader("reference") as g:
        yield g


# -- benchmarks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SIZES))
def test_benchmark_rows(bench_dir, name):
    rows = load_benchmark(name, bench_dir)
    assert len(rows) == SIZES[name]
    assert len({r["id"] for r in rows}) == len(rows), "ids must be unique within a benchmark"
    for r in rows:
        assert r["dataset"] == name and isinstance(r["gold"], str) and r["gold"]
        assert r["prompt"] == render_prompt("qwen25-math-cot", r["question"])
    if name == "math500":
        counts = {lv: sum(r["level"] == lv for r in rows) for lv in MATH500_LEVELS}
        assert counts == MATH500_LEVELS
    else:
        assert all(r["level"] is None for r in rows)


def test_benchmark_gold_answers(bench_dir):
    first = {n: load_benchmark(n, bench_dir, limit=1)[0] for n in SIZES}
    assert first["math500"]["gold"] == r"\left( 3, \frac{\pi}{2} \right)"
    assert first["math500"]["id"] == "test/precalculus/807.json"
    assert first["math500"]["meta"] == {"subject": "Precalculus"}
    assert first["gsm8k"]["gold"] == "18"  # after '####'
    assert first["amc23"]["gold"] == "27"  # the file holds 27.0
    assert first["minerva_math"]["gold"] == "1.6"  # last \boxed{} of the solution
    assert first["olympiadbench"]["gold"] == "2"  # final_answer ['2']
    assert first["college_math"]["gold"] == "10-4 n"  # '$10-4 n$'
    aime = {r["id"]: r["gold"] for r in load_benchmark("aime24", bench_dir)}
    assert aime["67"] == "25" and aime["85"] == "80"  # zero-padded '025', '080'


@pytest.mark.slow
def test_every_gold_answer_parses_and_matches_itself(bench_dir, grader):
    """Gold answers, wrapped as LaTeX, parse and verify against themselves (College Math: the
    first 300 rows; its full file has 6 prose golds that math-verify cannot parse)."""
    for name in SIZES:
        rows = load_benchmark(name, bench_dir, limit=300 if name == "college_math" else None)
        results = grader.grade_many((r["gold"], r["gold"]) for r in rows)
        assert [r["gold"] for r, res in zip(rows, results) if not res.correct] == [], name


def test_benchmark_levels_limit_and_prompt(bench_dir):
    rows = load_benchmark("math500", bench_dir, levels=(5,), limit=7, prompt="fewshot")
    assert len(rows) == 7 and {r["level"] for r in rows} == {5}
    assert rows[0]["prompt"].endswith(f"Question: {rows[0]['question']}\nAnswer: ")
    plain = load_benchmark("gsm8k", bench_dir, prompt=None, limit=2)
    assert [r["prompt"] for r in plain] == [r["question"] for r in plain]


def test_benchmark_errors(bench_dir, tmp_path):
    with pytest.raises(BenchmarkError, match="unknown benchmark 'math5'.*math500"):
        load_benchmark("math5", bench_dir)
    with pytest.raises(BenchmarkError, match=r"gsm8k/test.jsonl does not exist"):
        load_benchmark("gsm8k", tmp_path)
    with pytest.raises(BenchmarkError, match="no difficulty levels"):
        load_benchmark("gsm8k", bench_dir, levels=(1,))
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text(
        json.dumps({"question": "q", "answer": "#### 3", "idx": 0}) + "\n"
        + json.dumps({"question": "q", "answer": "no marker", "idx": 1}) + "\n")
    with pytest.raises(BenchmarkError, match=r"line 2: no field answer \(with '#### <number>'\)"):
        load_benchmark("gsm8k", tmp_path)
    assert set(BENCHMARKS) - {"l2s_family"} == set(SIZES)  # the family's is written by zoo export


# -- prompts ----------------------------------------------------------------------------------------
def test_prompt_templates():
    assert render_prompt("qwen25-math-cot", "What is 1+1?") == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n")
    few = render_prompt("fewshot", "What is 1+1?")
    assert few.count("Question: ") == 5 and few.count("Answer: ") == 5
    assert few.endswith("\n\n\nQuestion: What is 1+1?\nAnswer: ")
    assert "\nQuestion:" in get_prompt("fewshot").stop
    assert "<|im_end|>" in get_prompt("qwen25-math-cot").stop
    with pytest.raises(PromptError, match="unknown prompt template 'cot'.*qwen25-math-cot"):
        render_prompt("cot", "x")
    limit = [GenerationSettings(max_new_tokens=v).max_new_tokens for v in ("8k", "10K", 300, "300")]
    assert limit == [8192, 10240, 300, 300]
    with pytest.raises(GenerationError, match="max_new_tokens='12k' is invalid; it must be a "
                       "positive integer or one of 8k, 10k"):
        GenerationSettings(max_new_tokens="12k")


def test_chat_prompt_uses_the_models_template(tiny_pair):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_pair[1])
    with pytest.raises(PromptError, match="chat template"):
        render_prompt("chat", "What is 1+1?", tok)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert render_prompt("chat", "What is 1+1?", tok) == (
        f"<|user|>What is 1+1?\n{INSTRUCTION}<|assistant|>")


class BosTokenizer:
    """Stands for DeepSeek-R1-Distill's tokenizer: its chat template starts with the BOS and
    tokenizing adds a BOS too (add_bos_token)."""

    bos_token, bos_token_id = "<bos>", 7
    chat_template = "..."

    def __init__(self, adds_bos: bool):
        self.adds_bos = adds_bos

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return f"<bos><User>{messages[0]['content']}<Assistant>"

    def __call__(self, text):
        return {"input_ids": ([7] if self.adds_bos else []) + [100] * len(text)}


def test_chat_prompt_leaves_the_bos_to_the_tokenizer():
    q = f"What is 1+1?\n{INSTRUCTION}"
    assert render_prompt("chat", "What is 1+1?", BosTokenizer(True)) == f"<User>{q}<Assistant>"
    assert render_prompt("chat", "What is 1+1?", BosTokenizer(False)) == (
        f"<bos><User>{q}<Assistant>")


# -- extraction -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, answer, source", [
    (r"so $x = \boxed{\frac{1}{\sqrt{2}}}$.", r"\frac{1}{\sqrt{2}}", "boxed"),
    (r"first \boxed{3}, then \boxed{\{1, 2\}}", r"\{1, 2\}", "boxed"),
    (r"\boxed{7} and then \boxed{\frac{1}{2", "7", "boxed"),  # an unclosed box is skipped
    ("Thus the answer is: $-4$.\nDone", "-4", "answer_is"),
    ("We get 12 apples, then 1,234.5 pears", "1234.5", "last_number"),
    ("no answer here", None, None),
])
def test_extract_labelled(text, answer, source):
    assert extract_labelled(text) == (answer, source)


def test_last_number_fallback_can_be_turned_off():
    assert extract_labelled("we get 12", fallback_last_number=False) == (None, None)


# -- grading ----------------------------------------------------------------------------------------
# (answer, gold, strict verdict, reference-mode verdict), each checked by hand against math-verify's
# rules and the Qwen2.5-Math toolkit's math_equal (rel_tol 1e-4; gold/100 and gold*100 accepted).
CASES = [
    (r"\frac{1}{2}", "0.5", True, True),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})", True, True),
    ("10000", "10{,}000", True, False),  # the toolkit does not read LaTeX's {,}: it is wrong here
    ("50", "0.5", False, True),  # percentage tolerance: a toolkit false positive
    ("0.5", "50", False, True),
    ("1.00005", "1", False, True),  # rel_tol 1e-4
    ("3.1416", r"\pi", False, True),  # numeric value of the expression within rel_tol 1e-4
    (r"2\sqrt{2}", r"\sqrt{8}", True, True),
    ("7", "8", False, False),
    (r"x^2+1", "1+x^2", True, True),
]


@pytest.mark.parametrize("answer, gold, strict, reference", CASES)
def test_grading_modes(grader, reference_grader, answer, gold, strict, reference):
    assert grader.grade(answer, gold) == GradeResult(strict, "ok")
    assert reference_grader(answer, gold) is reference


def test_missing_answers_are_counted_not_sent(grader):
    before = grader.counts["no_answer"]
    assert grader.grade(None, "3") == GradeResult(False, "no_answer")
    assert grader.grade(float("nan"), "3") == GradeResult(False, "no_answer")
    assert grader.grade("3", None) == GradeResult(False, "no_answer")
    assert grader.counts["no_answer"] == before + 3
    assert grader(" 27 ", 27.0) is True  # gold numbers as the benchmark files store them


@pytest.mark.slow
def test_pathological_expression_times_out_and_grading_goes_on():
    with MathGrader(timeout=2.0) as g:
        start = time.monotonic()
        assert g.grade("9^{9^{9}}", "1") == GradeResult(False, "timeout")  # 370M-digit power
        assert time.monotonic() - start < 30  # killed, not waited for
        assert g.grade("3", "3") == GradeResult(True, "ok")  # a fresh worker
        assert g.counts["timeout"] == 1 and g.counts["ok"] == 1 and g.restarts == 1
        assert "1 timed out (> 2 s)" in g.report()


def test_a_worker_that_dies_gives_an_error_status(tmp_path, monkeypatch):
    dies = tmp_path / "dies.py"
    dies.write_text('import sys\nprint(\'"ready"\', flush=True)\nsys.stdin.readline()\n'
                    'sys.exit(3)\n')
    monkeypatch.setattr(grade_mod, "WORKER", dies)
    with MathGrader() as g:
        assert g.grade("1", "1") == GradeResult(False, "error")
        assert g.grade("1", "1") == GradeResult(False, "error")  # restarted, died again
        assert g.counts["error"] == 2 and g.restarts == 2


def test_a_worker_that_cannot_start_is_an_error(tmp_path, monkeypatch):
    broken = tmp_path / "broken.py"
    broken.write_text("raise ImportError('no math_verify')\n")
    monkeypatch.setattr(grade_mod, "WORKER", broken)
    with pytest.raises(GradeError, match="failed to start.*math_verify"):
        MathGrader().grade("1", "1")
    with pytest.raises(GradeError, match="mode 'exact'"):
        MathGrader("exact")


# -- validation on real outputs with reference grades -------------------------------------------------
def _real_samples(shared_data):
    rows = [json.loads(line) for line in open(shared_data / "samples" / "math_cot_100.jsonl")]
    samples = [(resp, r["answer"], score) for r in rows
               for resp, score in zip(r["code"], r["score"])]
    assert len(samples) == 800 and sum(s for *_, s in samples) == 728
    return samples


@pytest.mark.slow
def test_agreement_with_reference_grades_on_real_outputs(shared_data, grader, reference_grader):
    samples = _real_samples(shared_data)
    answers = [extract_labelled(resp) for resp, _, _ in samples]
    assert sum(a.source == "boxed" for a in answers) == 800  # every response boxes its answer
    strict = grader.grade_many((a.answer, gold) for a, (_, gold, _) in zip(answers, samples))
    ref = reference_grader.grade_many((a.answer, gold) for a, (_, gold, _) in zip(answers, samples))
    assert all(r.status == "ok" for r in strict + ref)
    agree = sum(r.correct == s for r, (*_, s) in zip(strict, samples))
    agree_ref = sum(r.correct == s for r, (*_, s) in zip(ref, samples))
    assert agree / 800 >= 0.97
    assert agree_ref > agree  # reference mode reproduces the toolkit more closely
    disagree = [(a.answer, gold, s) for r, a, (_, gold, s) in zip(strict, answers, samples)
                if r.correct != s]
    # every disagreement of the strict grader is a toolkit false negative on '10{,}000'
    assert ("10000", "10{,}000", False) in disagree
    assert all(gold == "10{,}000" for _, gold, _ in disagree)


def test_grade_responses_adds_status(grader):
    import pandas as pd

    df = pd.DataFrame({"answer": [r"\frac{3}{4}", None, "2"], "gold": ["0.75", "1", "3"]})
    out = grade_responses(df, grader, progress=False)
    assert out["correct"].tolist() == [True, False, False]
    assert out["grade_status"].tolist() == ["ok", "no_answer", "ok"]
    assert "correct" not in df.columns


class ScriptedBackend:
    """Gives back fixed responses, one per prompt, in order."""

    name = "scripted"

    def __init__(self, texts):
        self.texts = texts

    def generate(self, prompts, settings):
        return [[Generation(self.texts[p], 5, "stop")] for p in prompts]


def test_evaluate_records_answer_source_and_grade_status(grader, tmp_path):
    rows = [{"id": "a", "prompt": "p1", "gold": "0.5"}, {"id": "b", "prompt": "p2", "gold": "4"},
            {"id": "c", "prompt": "p3", "gold": "9"}]
    backend = ScriptedBackend({"p1": r"so \boxed{\frac{1}{2}}", "p2": "the answer is 4.",
                               "p3": "maybe 9"})
    df = evaluate(None, rows, tmp_path / "r.jsonl", backend=backend, extract=extract_labelled,
                  grader=grader, progress=False)
    assert df["answer"].tolist() == [r"\frac{1}{2}", "4", "9"]
    assert df["answer_source"].tolist() == ["boxed", "answer_is", "last_number"]
    assert df["correct"].tolist() == [True, True, True]
    assert df["grade_status"].tolist() == ["ok", "ok", "ok"]


def test_cli_eval_on_a_benchmark(tiny_pair, bench_dir, tmp_path, capsys):
    from l2s_kit.cli import main
    from l2s_kit.evaluate import load_responses

    out = tmp_path / "gsm8k.jsonl"
    assert main(["eval", str(tiny_pair[1]), "--benchmark", "gsm8k", "--benchmark", "aime24",
                 "--data-dir", str(bench_dir), "--limit", "2", "--prompt", "fewshot",
                 "--max-new-tokens", "4", "--out", str(out),  # grader: math-verify by default
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "math-verify (strict): 4 samples" in printed
    df = load_responses(out)
    assert df["dataset"].tolist() == ["gsm8k"] * 2 + ["aime24"] * 2
    assert df["gold"].tolist() == ["18", "3", "204", "113"]
    assert df["prompt"].str.endswith("\nAnswer: ").all()
    assert df["generation"].iloc[0]["stop"] == ["\nQuestion:", "\n\n\n"]
    assert set(df["grade_status"]) <= {"ok", "no_answer"}
    assert main(["eval", str(tiny_pair[1]), "--benchmark", "gsm8k", "--out", str(out)]) == 2
    assert "--data-dir" in capsys.readouterr().err


def test_numbers_longer_than_pythons_int_string_limit_grade_right(grader):
    n = "7" * 5000  # past Python's default 4300-digit int <-> str limit
    assert [r.correct for r in grader.grade_many([(n, n), ("1" + n, n)])] == [True, False]


def test_simple_grader_reads_a_unicode_minus_and_never_matches_empty_answers():
    from l2s_kit.evaluate.extract import grade

    assert grade("\u22123", "-3") and grade("-3", "\u22123") and grade("$\u22120.5$", "-0.5")
    assert not grade("", "") and not grade("  ", "") and not grade("$ $", "")
    assert not grade("", "3") and not grade("3", "")
