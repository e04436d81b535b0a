"""Stripe's error bodies: `{"error": {"type", "code", "message", "param", "doc_url"}}`."""

from __future__ import annotations

from typing import Any

DOC_URL = "https://docs.stripe.com/error-codes"


class ApiError(Exception):
    """An answer other than 2xx, raised anywhere inside a request."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        keep_effects: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.extra = extra or {}
        #: Commit what the request already wrote (a declined payment still counts as an
        #: attempt and emits an event) and keep the answer for idempotent replays.
        self.keep_effects = keep_effects

    @classmethod
    def invalid(
        cls, message: str, *, param: str | None = None, code: str | None = None
    ) -> ApiError:
        return cls(400, "invalid_request_error", message, code=code, param=param)

    @classmethod
    def missing(cls, kind: str, object_id: str, *, param: str = "id") -> ApiError:
        return cls(
            404,
            "invalid_request_error",
            f"No such {kind}: '{object_id}'",
            code="resource_missing",
            param=param,
        )

    @classmethod
    def key_in_use(cls) -> ApiError:
        """409: another request with this idempotency key is still being answered."""
        return cls(
            409,
            "invalid_request_error",
            "There is currently another in-progress request using this idempotent key (that"
            " probably means you submitted twice, and the other request is still going"
            " through). Please try again later.",
            code="idempotency_key_in_use",
        )

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"{DOC_URL}#{self.code.replace('_', '-')}"
        if self.param:
            error["param"] = self.param
        error.update(self.extra)
        return {"error": error}


def injected_error_body(status: int, message: str) -> dict[str, Any]:
    """What the fault injector answers with, shaped as Stripe answers those statuses."""
    if status == 429:
        return ApiError(429, "invalid_request_error", message, code="rate_limit").body()
    if status == 402:
        return ApiError(402, "card_error", message, code="card_declined").body()
    if status < 500:
        return ApiError(status, "invalid_request_error", message).body()
    return ApiError(status, "api_error", message).body()
