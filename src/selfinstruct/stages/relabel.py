"""The paper's data-quality experiment (section 4.5): regenerate the outputs with a teacher.

Instructions and inputs stay as generated; each output is replaced by a stronger model's
answer to the same task, and the fine-tuning data is rebuilt from the relabelled triples.
The paper reports about +10% from this on its human evaluation.
"""

from __future__ import annotations

from selfinstruct.config import GenerationParams
from selfinstruct.llm.types import Completion, CompletionRequest
from selfinstruct.parsing.plain_answer import ANSWER_STOPS, PlainAnswer, plain_answer
from selfinstruct.prompts import plain_task_prompt
from selfinstruct.records import Funnel, Triple
from selfinstruct.stages.chat_prompts import task_request, task_text
from selfinstruct.stages.context import StageContext

# Greedy. A completion teacher's answer ends where it starts a new task (parsing.plain_answer),
# as in the user-oriented evaluation; a chat teacher's at its end of turn (no stop strings).
TEACHER_PARAMS = GenerationParams(max_tokens=512, temperature=0.0, top_p=1.0, stop=ANSWER_STOPS)


def relabel_triples(
    ctx: StageContext, triples: list[Triple], params: GenerationParams = TEACHER_PARAMS
) -> tuple[list[Triple], Funnel]:
    """The same triples with the teacher's outputs; a triple whose new output is empty is dropped."""
    chat = ctx.config.backend.chat_prompts()
    if chat:
        stage = ctx.prompts.chat.relabel
        requests = [task_request(stage, task_text(t.instruction, t.input), params) for t in triples]
    else:
        requests = [CompletionRequest(plain_task_prompt(t.instruction, t.input), params) for t in triples]
    completions = ctx.complete_all(requests, "relabel")
    funnel = Funnel(generated=len(triples))
    relabelled = []
    for triple, completion in zip(triples, completions, strict=True):
        answer = _chat_answer(completion) if chat else plain_answer(completion.text, triple.instruction)
        if not answer.text:
            funnel.reject("empty_output")
        elif completion.finish_reason == "length" and not answer.ended:
            funnel.reject("truncated")
        else:
            relabelled.append(Triple(triple.instruction, triple.input, answer.text))
    funnel.accepted = len(relabelled)
    return relabelled, funnel


def _chat_answer(completion: Completion) -> PlainAnswer:
    """A chat reply is the answer, markdown and code included: it ends at the end of turn, and
    a chat model does not go on to a next task (a cut reply is only known by its finish reason)."""
    return PlainAnswer(completion.text.strip(), ended=False)
