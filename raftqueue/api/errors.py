"""API errors: a status, a snake_case code and a message a human can act on (API.md, "Errors")."""
from __future__ import annotations

import orjson
from aiohttp import web


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": {"code": code, "message": message}}),
                        content_type="application/json", headers=headers)


def invalid(field: str, message: str) -> ApiError:
    """400 validation_error naming the field."""
    return ApiError(400, "validation_error", f"{field}: {message}")


# Store result codes -> HTTP statuses.
STORE_STATUS = {"validation_error": 400, "forbidden": 403, "not_found": 404, "conflict": 409, "internal": 500}


def store_error(error: dict) -> ApiError:
    code = error.get("code", "internal")
    return ApiError(STORE_STATUS.get(code, 500), code, error.get("message", code))
