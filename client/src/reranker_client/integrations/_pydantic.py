"""What the LangChain and LlamaIndex adapters share: both are pydantic v2 models (LlamaIndex's
bridge re-exports pydantic itself), pydantic collects validators from a mixin, and both hold
their API key as a SecretStr, so the option checks and the clients are written once here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from pydantic import SecretStr, field_validator, model_validator

from ..tritonclient_adapter import TLSOptions
from . import _common


class PydanticAdapter(_common.ClientOwner):
    """Mixin for a pydantic model with `top_n`, `api_key` and the client options of _common."""

    if TYPE_CHECKING:
        api_key: Optional[SecretStr]

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

    def _api_key(self) -> Optional[str]:
        return self.api_key.get_secret_value() if self.api_key else None

    async def aclose(self) -> None:
        """Close the clients this adapter built (a client you passed stays yours)."""
        await self._close_async()
