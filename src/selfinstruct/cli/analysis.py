"""Commands that show a run to a person: analyze (the report page) and review (rating by hand)."""

from __future__ import annotations

import argparse

from selfinstruct.cli.options import progress
from selfinstruct.cli.stdout import say
from selfinstruct.cli.summary import note


def cmd_analyze(args: argparse.Namespace) -> int:
    from selfinstruct.analysis.analyze import analyze_run

    result = analyze_run(args.run, args.seed_tasks, args.verb_rule, progress=progress(args))
    table, diversity = result.report["table1"], result.report["diversity"]
    share = diversity["share_verb_noun"]
    note(
        f"analyze: {table['instructions']} instructions, {table['instances'] or 0} instances; "
        f"verb-noun structure in {100 * (share or 0):.1f}% -> {result.html_path}"
    )
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from selfinstruct.analysis.review.ratings import format_summary, load_latest, summarize
    from selfinstruct.analysis.review.server import serve_review
    from selfinstruct.analysis.run_reader import read_run_scores
    from selfinstruct.records import read_jsonl
    from selfinstruct.rundir import REVIEW_DIR, REVIEW_RATINGS_FILE, REVIEW_SAMPLE_FILE

    ratings = load_latest(
        args.run / REVIEW_DIR / REVIEW_RATINGS_FILE
    )  # a corrupt file fails here, in one line
    if args.summary:
        latest = ratings
        sample = args.run / REVIEW_DIR / REVIEW_SAMPLE_FILE
        if sample.is_file():  # the sample last served: ratings of earlier samples' items do not count
            shown = {str(item.get("id")) for item in read_jsonl(sample)}
            latest = {i: r for i, r in latest.items() if i in shown}
        say(format_summary(summarize(latest, read_run_scores(args.run).get("judge"))))
        return 0
    serve_review(args.run, args.host, args.port, args.sample, args.seed, not args.no_browser, log=note)
    return 0
