"""Prompt templates by name, as the long-to-short paper evaluated its models, and its length limits.

- ``qwen25-math-cot``: the Qwen2.5-Math evaluation toolkit's chain-of-thought chat prompt, written
  out in ChatML: the system turn "Please reason step by step, and put your final answer within
  \\boxed{}.", the question as the user turn, then the assistant turn opened. Zero-shot; the paper
  used it for the slow-thinking (System 2) models and the merges. Stop: ``<|im_end|>``.
- ``fewshot``: "Question: … Answer: …" with worked examples before the question (the shape of the
  toolkit's few-shot prompt for base models), for quick-thinking base models such as
  Qwen2.5-Math-7B that do not follow a chat template. Stops at the next "Question:".
- ``chat``: the model's own chat template (``tokenizer.apply_chat_template``), the instruction
  appended to the question in the user turn (DeepSeek's advice for R1 models: no system prompt).

>>> render_prompt("qwen25-math-cot", "What is 1+1?").splitlines()[1]
'Please reason step by step, and put your final answer within \\\\boxed{}.<|im_end|>'
"""

from __future__ import annotations

from dataclasses import dataclass

from l2s_kit.errors import L2SError

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# The paper's limits on generated tokens (8K and 10K), by name.

# Worked examples of the few-shot prompt (written for this kit; short GSM8K-style problems, so
# that no benchmark problem leaks into a prompt).
FEWSHOT_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("A baker makes 24 rolls and sells 3 bags of 5 rolls. How many rolls are left?",
     "He sells 3 * 5 = 15 rolls, so 24 - 15 = 9 rolls are left. The answer is 9."),
    ("What is the value of $x$ if $2x + 3 = 11$?",
     "Subtracting 3 gives $2x = 8$, so $x = 4$. The answer is 4."),
    ("A rectangle has sides 6 and 10. What is its area?",
     "The area is 6 * 10 = 60. The answer is 60."),
    ("Simplify $\\frac{12}{18}$.",
     "Both divide by 6: $\\frac{12}{18} = \\frac{2}{3}$. The answer is $\\frac{2}{3}$."),
)


class PromptError(L2SError, ValueError):
    """An unknown prompt template, or one used without what it needs."""


@dataclass(frozen=True)
class PromptTemplate:
    """A named way to turn a question into a prompt. ``stop``: stop strings that go with it."""

    name: str
    description: str
    stop: tuple[str, ...] = ()
    needs_tokenizer: bool = False

    def render(self, question: str, tokenizer=None) -> str:
        if self.name == "qwen25-math-cot":
            return (f"<|im_start|>system\n{INSTRUCTION}<|im_end|>\n"
                    f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
        if self.name == "fewshot":
            shots = "".join(f"Question: {q}\nAnswer: {a}\n\n\n" for q, a in FEWSHOT_EXAMPLES)
            return f"{shots}Question: {question}\nAnswer: "
        if self.name == "chat":
            if tokenizer is None or not getattr(tokenizer, "chat_template", None):
                raise PromptError("prompt 'chat' applies the model's own chat template: give the "
                                  "model's tokenizer (one with a chat_template), or choose "
                                  f"another prompt: {', '.join(PROMPTS)}")
            try:
                text = tokenizer.apply_chat_template(
                    [{"role": "user", "content": f"{question}\n{INSTRUCTION}"}],
                    tokenize=False, add_generation_prompt=True)
            except Exception as e:  # jinja2's TemplateError and SecurityError (its sandbox)
                if type(e).__module__.split(".")[0] != "jinja2":
                    raise
                where = getattr(tokenizer, "name_or_path", "") or "the model"
                raise PromptError(
                    f"the chat template (chat_template) of {where} cannot be applied: "
                    f"{type(e).__name__}: {e}; the template is refused (a template may only "
                    "format the messages); fix it, or choose another prompt: "
                    f"{', '.join(PROMPTS)}") from None
            return _without_double_bos(text, tokenizer)
        raise PromptError(f"no renderer for prompt {self.name!r}")


def _without_double_bos(text: str, tokenizer) -> str:
    """The rendered chat without its leading BOS when the tokenizer adds one itself (as
    DeepSeek-R1-Distill's does): the backends tokenize prompts with special tokens, so the model
    sees one BOS, as in training, not two."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or not text.startswith(bos):
        return text
    ids = tokenizer("x")["input_ids"]
    adds_bos = bool(ids) and ids[0] == getattr(tokenizer, "bos_token_id", None)
    return text[len(bos):] if adds_bos else text


PROMPTS: dict[str, PromptTemplate] = {
    "qwen25-math-cot": PromptTemplate(
        "qwen25-math-cot", "Qwen2.5-Math CoT chat prompt, zero-shot (slow-thinking models, merges)",
        stop=("<|im_end|>", "<|endoftext|>")),
    "fewshot": PromptTemplate(
        "fewshot", f"'Question: ... Answer:' with {len(FEWSHOT_EXAMPLES)} worked examples "
        "(quick-thinking base models)", stop=("\nQuestion:", "\n\n\n")),
    "chat": PromptTemplate(
        "chat", "the model's own chat template, instruction in the user turn",
        needs_tokenizer=True),
}


def get_prompt(name: str) -> PromptTemplate:
    """The template called ``name``; the error lists the available ones."""
    if name not in PROMPTS:
        raise PromptError(f"unknown prompt template {name!r}; available: {', '.join(PROMPTS)}")
    return PROMPTS[name]


def render_prompt(name: str, question: str, tokenizer=None) -> str:
    """``question`` in the template ``name`` (``chat`` needs the model's ``tokenizer``)."""
    return get_prompt(name).render(question, tokenizer)
