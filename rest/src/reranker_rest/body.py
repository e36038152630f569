"""Reading a request body: JSON to a typed request, every failure in plain words naming the
field. The rerank routes read their bodies here rather than through FastAPI's body parameter,
so that a malformed body says what is wrong ("not valid JSON: Expecting value at line 1
column 30") instead of pydantic's `[29]: JSON decode error`, a body sent without a JSON
Content-Type (curl -d) is still read, and `/rerank` can pick its dialect from the body."""

from __future__ import annotations

import json
from typing import Any, Dict, Type, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from .errors import ApiError, validation_message

Model = TypeVar("Model", bound=BaseModel)


# A body that is not JSON at all is 400 (malformed syntax, as TEI's axum extractor and Cohere
# answer it); JSON of the wrong shape is 422 (it parsed, the schema refused it).
MALFORMED = 400
WRONG_SHAPE = 422


async def read_object(request: Request) -> Dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        raise ApiError(MALFORMED, "request body: empty; send a JSON object")
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(MALFORMED, "request body: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ApiError(
            MALFORMED, f"request body: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    except RecursionError:
        raise ApiError(MALFORMED, "request body: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(WRONG_SHAPE, f"request body: expected a JSON object, got a JSON {_kind(data)}")
    return data


def parse(model: Type[Model], data: Dict[str, Any]) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ApiError(WRONG_SHAPE, validation_message(err.errors())) from None


def openapi_body(*models: Type[BaseModel]) -> dict:
    """`openapi_extra` declaring the JSON body these routes read themselves."""
    schemas = [m.model_json_schema(ref_template="#/components/schemas/{model}") for m in models]
    schema = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")
