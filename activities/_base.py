"""What every activity input and result shares."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ActivityModel(BaseModel):
    """One frozen pydantic model in, one out: fields can be added without breaking callers."""

    model_config = ConfigDict(frozen=True, extra="forbid")
