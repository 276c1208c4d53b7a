"""The base of every config model: unknown keys are errors, and a built config never changes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    # extra="forbid": a typo in a YAML key never silently falls back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)
