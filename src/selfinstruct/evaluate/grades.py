"""The A-D grade in a judge's free-text reply, or None.

The judge is asked for one letter after "Grade:", but chat models add prose, and English
is full of the letter "a" ("I'd give it a B"). In order of trust:

1. the whole reply is one letter, perhaps in markdown, quotes or brackets: "B", "**c**", "(D).";
2. else the last letter right after "grade", "rating" or "score": "Grade: C", "my rating is a B";
3. else a letter that opens the reply: "B - minor errors. A better answer would ...";
4. else the last capital A-D standing alone, the article "A" ("A good answer") excepted.

A lowercase "a" before a word is always the article, never a grade.
"""

from __future__ import annotations

import re

GRADES = ("A", "B", "C", "D")

# A letter with no letter, digit or apostrophe on either side ("B+" is a B; "I'd", "3D" are not).
_LETTER = re.compile(r"(?<![A-Za-z0-9'’])([ABCDabcd])(?![A-Za-z0-9'’])")
# What may wrap a reply that is only the grade.
_WRAPPING = " \t\r\n*_`\"'“”‘’()[]{}.:!"
# The text just before a grade named as such: "Grade: ", "rating is a ", "**Score** = ".
_MARKER = re.compile(
    r"\b(?:grade|rating|score)\b[^\w\n]*(?:(?:is|of|would be|be|as)\b[^\w\n]*)?(?:an?\s+)?\Z", re.IGNORECASE
)
_MARKER_REACH = 80
# After "A": a word on the same line makes it the article ("A good answer", "a B").
_WORD_AFTER = re.compile(r"[ \t]+[A-Za-z]")


def parse_grade(text: str) -> str | None:
    """The grade A-D that `text` gives, or None when it gives none (see the module's rules)."""
    bare = text.strip(_WRAPPING)
    if len(bare) == 1 and bare.upper() in GRADES:
        return bare.upper()
    marked: list[str] = []
    standalone: list[tuple[int, str]] = []
    for match in _LETTER.finditer(text):
        letter = match.group(1)
        article = letter in "aA" and _WORD_AFTER.match(text, match.end()) is not None
        # The marker is looked for in a short window: a long reply stays linear.
        marker = _MARKER.search(text, max(0, match.start() - _MARKER_REACH), match.start())
        if marker and not (letter == "a" and article):
            marked.append(letter.upper())
        elif letter.isupper() and not article:
            standalone.append((match.start(), letter))
    if marked:
        return marked[-1]
    if standalone:
        start, letter = standalone[0]
        if not text[:start].strip(_WRAPPING):
            return letter
        return standalone[-1][1]
    return None
