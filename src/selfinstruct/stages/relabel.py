"""The paper's data-quality experiment (section 4.5): regenerate the outputs with a teacher.

Instructions and inputs stay as generated; each output is replaced by a stronger model's
answer to the same task, and the fine-tuning data is rebuilt from the relabelled triples.
The paper reports about +10% from this on its human evaluation.
"""

from __future__ import annotations

from selfinstruct.config import GenerationParams
from selfinstruct.llm.base import CompletionRequest
from selfinstruct.prompts import plain_task_prompt
from selfinstruct.records import Funnel, Triple
from selfinstruct.stages.chat_prompts import task_request, task_text
from selfinstruct.stages.context import StageContext

# Greedy; a blank line or a new "Input:" ends the answer, as in the user-oriented evaluation.
TEACHER_PARAMS = GenerationParams(
    max_tokens=512, temperature=0.0, top_p=1.0, stop=("\n\n", "\nInput:", "<|endoftext|>")
)


def relabel_triples(
    ctx: StageContext, triples: list[Triple], params: GenerationParams = TEACHER_PARAMS
) -> tuple[list[Triple], Funnel]:
    """The same triples with the teacher's outputs; a triple whose new output is empty is dropped."""
    if ctx.config.backend.chat_prompts():
        stage = ctx.prompts.chat.relabel
        requests = [task_request(stage, task_text(t.instruction, t.input), params) for t in triples]
    else:
        requests = [CompletionRequest(plain_task_prompt(t.instruction, t.input), params) for t in triples]
    completions = ctx.complete_all(requests, "relabel")
    funnel = Funnel(generated=len(triples))
    relabelled = []
    for triple, completion in zip(triples, completions, strict=True):
        output = completion.text.strip()
        if not output:
            funnel.reject("empty_output")
        elif completion.finish_reason == "length":
            funnel.reject("truncated")
        else:
            relabelled.append(Triple(triple.instruction, triple.input, output))
    funnel.accepted = len(relabelled)
    return relabelled, funnel
