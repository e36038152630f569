"""The one path from an HTTP request to Triton: AsyncRerankClient, plus the front door's own
limits. Scoring, chunking, retries and failover are the client's; nothing here re-implements
them."""

from __future__ import annotations

from typing import List, Optional, Sequence

from reranker_client import AsyncRerankClient, RerankError, RerankResult, TLSOptions
from reranker_client.server_limits import ServerLimits

from .errors import ApiError, from_client_error
from .settings import Settings


def make_client(settings: Settings) -> AsyncRerankClient:
    tls = None
    if settings.tls_enabled:
        tls = TLSOptions(
            root_certificates=settings.tls_ca, private_key=settings.tls_key, certificate_chain=settings.tls_cert
        )
    urls = list(settings.triton_urls)
    return AsyncRerankClient(
        urls[0] if len(urls) == 1 else urls,
        protocol="grpc",
        model=settings.triton_model,
        timeout=settings.timeout_s,
        retries=settings.retries,
        max_concurrency=settings.max_concurrency,
        tls=tls,
    )


def check_text(field: str, text: str) -> None:
    """What the model server cannot take, said in the caller's terms before anything is sent:
    a NUL (the tokenizer model refuses it, in Triton's words naming its own tensors) and a lone
    UTF-16 surrogate (JSON's `\\ud800` escape decodes to one; it has no UTF-8 form)."""
    nul = text.find("\x00")
    if nul >= 0:
        raise ApiError(400, f"{field}: contains a NUL character (\\u0000) at position {nul}; remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ApiError(
            400,
            f"{field}: contains a lone UTF-16 surrogate (\\u{ord(text[err.start]):04x}) at position "
            f"{err.start}, which is not valid Unicode text",
        ) from None


class Backend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = make_client(settings)

    async def rerank(
        self,
        query: str,
        texts: Sequence[str],
        top_n: Optional[int],
        field: str,
        long_documents: str = "truncate",
        max_length: Optional[int] = None,
    ) -> List[RerankResult]:
        """Results best first. `field` is the request's name for the documents (Cohere
        `documents`, TEI `texts`), so messages name what the caller sent. max_length: the
        request's own tokens per pair (request_max_length), None for the server's."""
        if not texts:
            raise ApiError(400, f"{field}: must not be empty", "Empty")
        if len(texts) > self.settings.max_documents:
            raise ApiError(
                400,
                f"{field}: {len(texts)} documents exceed the limit of "
                f"{self.settings.max_documents} per request (REST_MAX_DOCUMENTS)",
                "Validation",
            )
        check_text("query", query)
        for i, text in enumerate(texts):
            check_text(f"{field}[{i}]", text)
        await self._check_query_size(query)
        try:
            results = await self.client.rerank(
                query, list(texts), top_k=top_n, long_documents=long_documents, max_length=max_length
            )
        except RerankError as err:
            raise self._error(err, field) from err
        return results

    async def _check_query_size(self, query: str) -> None:
        """The client checks each text against the server's byte limit but names the query by
        the document it is paired with; the query is one field, checked once here."""
        limit = (await self.limits()).max_text_bytes
        size = len(query.encode("utf-8"))
        if limit and size > limit:
            raise ApiError(400, f"query: {size} bytes exceeds the limit of {limit} bytes per text")

    async def limits(self) -> ServerLimits:
        try:
            return await self.client.server_limits()
        except RerankError as err:
            raise self._error(err, "") from err

    async def max_length(self) -> Optional[int]:
        return (await self.limits()).max_length

    async def request_max_length(self, field: str, value: int) -> Optional[int]:
        """A request's own tokens-per-pair limit (Cohere `max_tokens_per_doc`, vLLM
        `truncate_prompt_tokens`) as the max_length to send: None when it is at or above the
        server's max_length (it holds already), the value itself from the server's smallest
        (min_request_max_length) up; below that, or on a server that predates per-request
        lengths, 400 naming the field and the limit."""
        limits = await self.limits()
        if limits.max_length is not None and value >= limits.max_length:
            return None
        low = limits.min_request_max_length
        if low is None or limits.max_length is None:
            raise ApiError(
                400,
                f"{field}: {value} cannot be honoured: this model server cuts each query+document pair to "
                f"its max_length ({limits.max_length} tokens) and takes no shorter one per request; send a "
                f"value >= {limits.max_length} or omit the field",
            )
        if value < low:
            raise ApiError(
                400,
                f"{field}: {value} is below the smallest the server applies, {low} tokens per query+document "
                f"pair (its max_length is {limits.max_length})",
            )
        return value

    async def ready(self) -> bool:
        return await self.client.ready()

    async def close(self) -> None:
        await self.client.close()

    def _error(self, err: RerankError, field: str) -> ApiError:
        api = from_client_error(err, self.settings.retry_after_s, self.settings.timeout_s)
        if field and field != "documents" and api.status == 400:
            # The client names documents `documents[i]`; say the caller's field instead.
            api.message = api.message.replace("documents[", f"{field}[")
        return api
