"""What the JSON API's endpoints share: the shape of an error, and how a list endpoint reads
its paging from the query string, so that tubes and schedules page, and fail, alike."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

PAGE_DEFAULT = 100
PAGE_MAX = 1000
PAGING = ("q", "sort", "order", "offset", "limit")  # any of these asks for one page


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def number(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 20 else None


def page(query: Mapping[str, str]) -> tuple[bool, int, int] | JSONResponse:
    """(descending, offset, limit) of a sorted list's page, or the 400 saying what is wrong."""
    order = query.get("order", "asc")
    if order not in ("asc", "desc"):
        return error(400, "bad_request", "order must be asc or desc")
    offset = number(query.get("offset", "0"))
    limit = number(query.get("limit", str(PAGE_DEFAULT)))
    if offset is None:
        return error(400, "bad_request", "offset must be a number (0 or more)")
    if limit is None or not 1 <= limit <= PAGE_MAX:
        return error(400, "bad_request", f"limit must be from 1 to {PAGE_MAX}")
    return order == "desc", offset, limit
