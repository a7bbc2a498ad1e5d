"""The benchmark loaders' format quirks on small files written here, so that a clone without the
reference data still checks them (the real files are checked in test_grading.py)."""

from __future__ import annotations

import json

import pytest

from l2s_kit.evaluate.benchmarks import BENCHMARKS, BenchmarkError, load_benchmark, parse_level

# One or two rows per benchmark in the Qwen2.5-Math toolkit's layout, shaped as the real files are.
FILES = {
    "math500": [
        {"problem": "Convert (0,3) to polar.", "answer": r"\left( 3, \frac{\pi}{2} \right)",
         "subject": "Precalculus", "level": 2, "unique_id": "test/precalculus/807.json"},
        {"problem": "Hard one", "answer": " 7 ", "subject": "Algebra", "level": "Level 5",
         "unique_id": "test/algebra/1.json"},
    ],
    "gsm8k": [{"question": "How many?", "answer": "Half of 36 is 18.\n#### 1,800", "idx": 0}],
    "aime24": [{"id": 60, "question": "Find it.", "answer": "025", "url": "x"},
               {"id": 61, "question": "And this.", "answer": "080"}],
    "amc23": [{"id": 0, "question": "How far?", "answer": 27.0}],
    "minerva_math": [{"problem": "Rate?", "idx": 3, "type": "Physics",
                      "solution": r"First \boxed{2} then, corrected, \boxed{1.6}."}],
    "olympiadbench": [{"id": 5, "question": "Pairs?", "final_answer": ["$(2, 3)$", "$(3, 2)$"],
                       "answer_type": "Tuple", "is_multiple_answer": True, "unit": None,
                       "subfield": "Algebra"},
                      {"id": 6, "question": "One?", "final_answer": ["$2$"],
                       "answer_type": "Numerical", "is_multiple_answer": False, "unit": None,
                       "subfield": "Algebra"}],
    "college_math": [{"question": "Solve.", "answer": "$10-4 n$", "data_topic": "algebra",
                      "question_number": "1"},
                     {"question": "Again.", "answer": "$x$", "data_topic": "algebra",
                      "question_number": "1"}],
    "l2s_family": [{"id": "chain-test-3+4", "question": "Q 3 +4 _ _ A", "answer": "7", "level": 1}],
}


@pytest.fixture
def data_dir(tmp_path):
    for name, rows in FILES.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def golds(name, data_dir):
    return [r["gold"] for r in load_benchmark(name, data_dir)]


def test_every_benchmark_has_a_fixture():
    assert set(FILES) == set(BENCHMARKS)


def test_gold_answers_follow_each_files_convention(data_dir):
    assert golds("gsm8k", data_dir) == ["1800"]  # after '####', thousands separator removed
    assert golds("aime24", data_dir) == ["25", "80"]  # zero padding dropped
    assert golds("amc23", data_dir) == ["27"]  # 27.0 in the file
    assert golds("minerva_math", data_dir) == ["1.6"]  # the LAST \boxed{} of the solution
    assert golds("olympiadbench", data_dir) == ["(2, 3), (3, 2)", "2"]  # lists joined, $ stripped
    assert golds("college_math", data_dir) == ["10-4 n", "x"]  # $ removed
    assert golds("math500", data_dir) == [r"\left( 3, \frac{\pi}{2} \right)", "7"]
    assert golds("l2s_family", data_dir) == ["7"]


def test_ids_levels_and_meta(data_dir):
    m = load_benchmark("math500", data_dir)
    assert [r["level"] for r in m] == [2, 5]  # 2 and "Level 5"
    assert m[0]["id"] == "test/precalculus/807.json" and m[0]["meta"] == {"subject": "Precalculus"}
    assert [r["level"] for r in load_benchmark("gsm8k", data_dir)] == [None]
    # College Math's own ids repeat: rows are numbered by line instead
    assert [r["id"] for r in load_benchmark("college_math", data_dir)] == ["0", "1"]
    assert [r["id"] for r in load_benchmark("aime24", data_dir)] == ["60", "61"]
    assert [r["level"] for r in load_benchmark("math500", data_dir, levels=(5,))] == [5]
    with pytest.raises(BenchmarkError, match="no difficulty levels"):
        load_benchmark("gsm8k", data_dir, levels=(1,))


@pytest.mark.parametrize("value, level", [(3, 3), ("3", 3), ("Level 4", 4), ("Level ?", None),
                                          (None, None), (float("nan"), None)])
def test_parse_level(value, level):
    assert parse_level(value) == level


def test_a_torn_line_names_the_file_and_line(data_dir):
    path = data_dir / "gsm8k" / "test.jsonl"
    path.write_text(path.read_text() + '{"question": "cut off\n')
    with pytest.raises(BenchmarkError, match=r"gsm8k/test.jsonl, line 2: not valid JSON"):
        load_benchmark("gsm8k", data_dir)
