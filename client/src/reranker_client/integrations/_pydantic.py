"""The option checks the LangChain and LlamaIndex adapters share. Both are pydantic v2 models
(LlamaIndex's bridge re-exports pydantic itself), and pydantic collects validators from a mixin,
so the checks are written once here."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import field_validator, model_validator

from ..tritonclient_adapter import TLSOptions
from . import _common


class OptionChecks:
    """Mixin for a pydantic model with `top_n`, `tls` and the client options of _common."""

    @model_validator(mode="before")
    @classmethod
    def _client_or_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            _common.check_client_or_options(data)
        return data

    @field_validator("top_n")
    @classmethod
    def _top_n(cls, value: Optional[int]) -> Optional[int]:
        return _common.check_top(value, "top_n")

    @field_validator("tls", mode="before")
    @classmethod
    def _tls(cls, value: Any) -> Optional[TLSOptions]:
        return _common.tls_options(value)
