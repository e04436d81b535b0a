"""The base every canonical model shares, so the rules of the house are stated once."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CanonicalModel", "NonEmpty"]

NonEmpty = Annotated[str, Field(min_length=1)]


class CanonicalModel(BaseModel):
    """Frozen (a value, safe to pass between workflow steps) and strict about unknown fields.

    ``extra="forbid"`` makes a misspelt field from a mapper fail loudly instead of vanishing.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)
