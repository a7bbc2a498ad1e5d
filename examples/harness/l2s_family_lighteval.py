"""lighteval custom task: the l2s_kit family's task, graded by the number after the last
"answer is". lighteval loads a dataset folder: copy the exported test split into one
(`l2s zoo export data/bench && mkdir -p data/bench-hf && cp data/bench/l2s_family/test.jsonl
data/bench-hf/`) or point L2S_FAMILY_HF at yours. Used by `lighteval accelerate ...
--custom-tasks examples/harness/l2s_family_lighteval.py`."""
import os
import re

import numpy as np
from lighteval.metrics.metrics_sample import SampleLevelComputation
from lighteval.metrics.utils.metric_utils import SampleLevelMetric
from lighteval.tasks.lighteval_task import LightevalTaskConfig
from lighteval.tasks.requests import Doc, SamplingMethod

ANSWER = re.compile(r"answer is (\d+)", re.IGNORECASE)


class AnswerMatch(SampleLevelComputation):
    def compute(self, doc: Doc, model_response, **kwargs) -> float:
        found = ANSWER.findall(model_response.text[0])
        return float(bool(found) and found[-1] == doc.choices[doc.gold_index])


answer_match = SampleLevelMetric(metric_name="answer_match", higher_is_better=True,
                                 category=SamplingMethod.GENERATIVE,
                                 sample_level_fn=AnswerMatch(), corpus_level_fn=np.mean)


def prompt(line, task_name: str = None):
    return Doc(task_name=task_name, query=line["question"], choices=[line["answer"]],
               gold_index=0, specific={"id": line["id"], "level": line["level"]})


l2s_family = LightevalTaskConfig(
    name="l2s_family", prompt_function=prompt, hf_repo=os.environ.get("L2S_FAMILY_HF", "data/bench-hf"), hf_subset="default",
    hf_avail_splits=["test"], evaluation_splits=["test"], few_shots_split=None,
    few_shots_select=None, generation_size=96, stop_sequence=[], metrics=[answer_match],
    version=1)

TASKS_TABLE = [l2s_family]
