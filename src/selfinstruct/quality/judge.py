"""`score --method judge`: a judge model rates each kept row on the paper's quality questions.

The Self-Instruct paper's reviewers asked three questions of 200 generated rows (section
3.3, Table 2): is the instruction a valid task, is the input appropriate for it, is the
output a correct and acceptable response. Here a judge model (any backend the config
names: completion or chat, embedded or HTTP, any executor) answers them for every row of
RUN/finetuning_data/all_generated_instances.jsonl, with an overall score 1-5 that
`select` ranks by. A completion judge continues prompts/quality_judge.yaml (the rubric and
rated examples, then the row, open after "Valid task:"); a chat judge gets chat.yaml's
quality_judge (the rubric as the system message, the same rated examples as earlier turns,
then the row as the user's message).

Each request asks for the top log-probabilities of every token; where the judge gives them,
each answer is an expected value over its alternatives (judge_reply.py), else the answer
written. A reply without the four answers is a failure: counted, no score written.

Requests go through the request engine with its store in RUN (responses.sqlite, keyed by
the judge's identity, so a judge's answers never mix with the generator's): a rerun sends
only what has no answer yet. The run's config.yaml is left as it is; the run's lock is held
throughout. Writes RUN/finetuning_data/scores_judge.jsonl (scores.py) and summary.json's
funnel["score_judge"].
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfinstruct.analysis.score_stats import table2_estimate
from selfinstruct.config import GenerationParams, RunConfig, cache_dir
from selfinstruct.errors import InputFileError
from selfinstruct.files import remove_partial_writes
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.types import ChatMessage, Completion, CompletionRequest
from selfinstruct.prompts import ChatPrompts, ChatRowStage, QualityJudgePrompt, RatedRow, load_prompt
from selfinstruct.quality.judge_reply import Verdict, read_verdict
from selfinstruct.records import Triple, read_records, write_json
from selfinstruct.rundir import (
    CONFIG_FILE,
    FAILED_FILE,
    FINETUNE_DIR,
    GENERATED_INSTANCES_FILE,
    SCORES_GLOB,
    SUMMARY_FILE,
    TRIPLE_FIELDS,
)
from selfinstruct.rundir_reader import read_summary
from selfinstruct.runlock import RunLock
from selfinstruct.scores import Score, write_scores

STAGE = "score_judge"
# The alternatives read at each token: OpenAI's legacy completions API allows at most 5, and
# the answers that matter (yes/no, 1-5) are among the first few whenever they are likely.
TOP_LOGPROBS = 5
# Greedy. A completion judge writes its four lines and would go on to rate an example of its
# own: it stops at the blank line, or at the next instruction. A chat judge stops at its end of
# turn, with room for a few words around the four lines.
COMPLETION_PARAMS = GenerationParams(
    max_tokens=32, temperature=0.0, top_p=1.0, stop=("\n\n", "\nInstruction:"), top_logprobs=TOP_LOGPROBS
)
CHAT_PARAMS = GenerationParams(max_tokens=64, temperature=0.0, top_p=1.0, top_logprobs=TOP_LOGPROBS)
# Where a completion judge's answer begins: the prompt writes it, the judge goes on from there.
ANSWER_START = "Valid task:"
NO_INPUT = "(none)"


@dataclass(frozen=True)
class JudgePrompts:
    """How rows are put to the judge: as text to continue, or (`chat` set) as a conversation."""

    completion: QualityJudgePrompt
    chat: ChatRowStage | None

    @classmethod
    def load(cls, config: RunConfig) -> JudgePrompts:
        """The run config's prompt files (`prompts: {quality_judge: ..., chat: ...}`) or the
        packaged ones; a chat file without quality_judge falls back to the packaged entry."""
        completion = load_prompt(
            "quality_judge", config.prompts.get("quality_judge", "quality_judge.yaml"), QualityJudgePrompt
        )
        chat = None
        if config.backend.chat_prompts():
            chat = load_prompt("chat", config.prompts.get("chat", "chat.yaml"), ChatPrompts).quality_judge
            if chat is None:
                chat = load_prompt("chat", "chat.yaml", ChatPrompts).quality_judge
        return cls(completion, chat)

    def request(self, triple: Triple) -> CompletionRequest:
        if self.chat is None:
            return CompletionRequest(completion_prompt(self.completion, triple), COMPLETION_PARAMS)
        messages = [ChatMessage("system", self.chat.system_message(False))]
        for demo in self.completion.demonstrations[: self.chat.shots]:
            messages.append(ChatMessage("user", self._chat_row(demo.instruction, demo.input, demo.output)))
            messages.append(ChatMessage("assistant", _answers(demo)))
        # Every request shows the same demonstrations: all but the row asked are shared.
        shared = len(messages)
        messages.append(ChatMessage("user", self._chat_row(triple.instruction, triple.input, triple.output)))
        return CompletionRequest.chat(messages, CHAT_PARAMS, shared_prefix=shared)

    def _chat_row(self, instruction: str, task_input: str, output: str) -> str:
        assert self.chat is not None
        fields = {"instruction": instruction.strip(), "input": task_input.strip() or NO_INPUT}
        return self.chat.request.format(**fields, output=output.strip())

    def verdict(self, completion: Completion) -> tuple[Verdict | None, str]:
        """The verdict in a reply (None: unparseable), and the reply as read."""
        if self.chat is not None:
            return read_verdict(completion.text, completion.logprobs), completion.text
        reply = ANSWER_START + completion.text
        return read_verdict(reply, completion.logprobs, offset=len(ANSWER_START)), reply


def completion_prompt(prompt: QualityJudgePrompt, triple: Triple) -> str:
    """The rubric, the rated examples, then the row, open after its first answer's label."""
    blocks = [prompt.header.strip()]
    blocks += [
        f"{_row(demo.instruction, demo.input, demo.output)}\n{_answers(demo)}"
        for demo in prompt.demonstrations
    ]
    blocks.append(f"{_row(triple.instruction, triple.input, triple.output)}\n{ANSWER_START}")
    return "\n\n".join(blocks)


def _row(instruction: str, task_input: str, output: str) -> str:
    return f"Instruction: {instruction.strip()}\nInput: {task_input.strip() or NO_INPUT}\nOutput: {output.strip()}"


def _answers(demo: RatedRow) -> str:
    def yes(value: bool) -> str:
        return "yes" if value else "no"

    return (
        f"Valid task: {yes(demo.valid_task)}\nAppropriate input: {yes(demo.appropriate_input)}\n"
        f"Correct output: {yes(demo.correct_output)}\nScore: {demo.score}"
    )


@dataclass
class Judged:
    """The scores of the rows that got a verdict, and why the others got none."""

    scores: list[Score]
    rows: int
    request_failures: int = 0
    unparseable: int = 0


def judge_rows(engine: RequestEngine, prompts: JudgePrompts, triples: list[Triple], scorer: str) -> Judged:
    """Put every row to the judge (through the engine's store) and read its verdicts."""
    completions = engine.run([prompts.request(t) for t in triples], STAGE)
    judged = Judged([], len(triples))
    for triple, completion in zip(triples, completions, strict=True):
        if completion is None:  # failed after every retry: in failed.jsonl, sent again next time
            judged.request_failures += 1
            continue
        verdict, reply = prompts.verdict(completion)
        if verdict is None:
            judged.unparseable += 1
            continue
        judged.scores.append(Score(triple, verdict.score, scorer, {**verdict.details(), "reply": reply}))
    return judged


def table2(scores: list[Score]) -> dict[str, Any]:
    """The paper's Table 2 as this judge sees it: the share of scored rows with a valid task,
    an appropriate input, a correct output and all three, as the report counts them
    (analysis/score_stats.py: a yes-probability >= 0.5 is a yes)."""
    return {name: row["share"] for name, row in table2_estimate(scores).items()}


def score_judge(
    run: Path, config: RunConfig, progress: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Rate every kept row of `run` with the judge `config.backend` names; returns the summary entry."""
    from selfinstruct.backends import build_engine, start_backend

    source = run / FINETUNE_DIR / GENERATED_INSTANCES_FILE
    if not (run / CONFIG_FILE).is_file():
        raise InputFileError(f"{run / CONFIG_FILE}: not found; is {run} a run directory?")
    if not source.is_file():
        raise InputFileError(f"{source}: not found; run `selfinstruct prepare --out {run}` first")
    prompts = JudgePrompts.load(config)  # a bad prompt file fails before anything starts
    lock = RunLock.acquire(run)
    try:
        summary = read_summary(run)  # a corrupt one fails before the judge is started
        triples = [Triple.from_json(r) for r in read_records(source, *TRIPLE_FIELDS)]
        backend = start_backend(config.backend, cache_dir())
        try:
            remove_partial_writes(run / FINETUNE_DIR, (SCORES_GLOB,))
            # failed.jsonl lists the failures of the latest invocation: this one's.
            (run / FAILED_FILE).unlink(missing_ok=True)
            engine = build_engine(config.backend, run, backend, progress)
            started = time.monotonic()
            try:
                judged = judge_rows(engine, prompts, triples, judge_name(backend.identity()))
            finally:
                engine.store.close()
            seconds = time.monotonic() - started
        finally:
            backend.close()
        write_scores(run, "judge", judged.scores)
        entry = _summary_entry(judged, judge_name(backend.identity()), seconds)
        funnel = dict(summary.get("funnel", {}))
        funnel[STAGE] = entry
        write_json(run / SUMMARY_FILE, {**summary, "funnel": funnel})
    finally:
        lock.release()
    if judged.request_failures:
        log(f"score: {judged.request_failures} requests failed after retries (see {run / FAILED_FILE})")
    return entry


def judge_name(identity: dict[str, Any]) -> str:
    """The judge as a score record names it: its model (a served model's name, a file's)."""
    return str(identity.get("model") or identity.get("kind") or "judge")


def _summary_entry(judged: Judged, judge: str, seconds: float) -> dict[str, Any]:
    from_logprobs = sum(s.details["score_from"] == "logprobs" for s in judged.scores)
    return {
        "rows": judged.rows,
        "scored": len(judged.scores),
        "failed": judged.request_failures + judged.unparseable,
        "unparseable": judged.unparseable,
        "request_failures": judged.request_failures,
        "scored_from_logprobs": from_logprobs,
        "judge": judge,
        "seconds": round(seconds, 3),
        "rows_per_minute": round(60.0 * judged.rows / seconds, 2) if seconds > 0 else None,
        "table2": table2(judged.scores),
    }
