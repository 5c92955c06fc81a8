"""How the chat's web server refuses a request: one JSON shape, ``{"error": message}``, for every refusal.

Shared by the routes and by the body-size middleware, which stops an upload before any route reads it.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse


class RequestTooLarge(Exception):
    """The request body grew past the limit while it was being read."""

    def __init__(self, limit: int):
        super().__init__(f"the upload is larger than the limit of {limit} bytes")


def error_response(status: int, message: str) -> JSONResponse:
    """The page shows ``message`` as is, so it says what went wrong and what to do."""
    return JSONResponse({"error": message}, status_code=status)
