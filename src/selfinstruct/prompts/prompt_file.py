"""The base of every prompt file's schema, and the checks several of them share.

A prompt file is YAML package data (or a user's file in its place), validated on load by
its pydantic model: unknown keys are errors, and so are blank texts and `{}` fields that its
templates do not fill.
"""

from __future__ import annotations

import string

from pydantic import BaseModel, ConfigDict


class PromptFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def format_fields(template: str, allowed: tuple[str, ...]) -> set[str]:
    """The `{}` fields of a str.format template; a field not in `allowed` (`{output}`, `{0}`,
    `{input.x}`), a stray brace or a bad format spec is a ValueError."""
    try:
        parts = [(name, spec) for _, name, spec, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"template {template!r}: {exc} (write {{{{ and }}}} for a literal brace)") from None
    fields = {name for name, _ in parts}
    if any("{" in (spec or "") for _, spec in parts):
        raise ValueError(f"template {template!r}: a field inside a format spec is not supported")
    unknown = sorted(fields - set(allowed))
    if unknown:
        shown = ", ".join(f"{{{name}}}" for name in unknown)
        known = " and ".join(f"{{{name}}}" for name in allowed)
        raise ValueError(f"template {template!r} has unknown field(s) {shown}; use {known}")
    try:
        template.format(**dict.fromkeys(allowed, ""))  # conversions and format specs must work too
    except ValueError as exc:
        raise ValueError(f"template {template!r}: {exc}") from None
    return fields
