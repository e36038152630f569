"""The limits the served `rerank` ensemble publishes in its config (contract.Param), read
once per client: the client packs, counts and checks with them and repeats none."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Protocol, Tuple, Union

from . import contract
from .errors import InvalidInputError, ModelNotReadyError


class _ParameterProto(Protocol):
    @property
    def string_value(self) -> str: ...


class _ModelConfigProto(Protocol):
    @property
    def max_batch_size(self) -> int: ...

    @property
    def parameters(self) -> Mapping[str, _ParameterProto]: ...


class ModelConfigResponse(Protocol):
    """gRPC's ModelConfigResponse (the fields read here)."""

    @property
    def config(self) -> _ModelConfigProto: ...


# get_model_config's answer: JSON (HTTP) or the gRPC proto.
ModelConfig = Union[Dict[str, Any], ModelConfigResponse]


@dataclass(frozen=True)
class ServerLimits:
    """What the served ensemble publishes (contract.Param); None where an older server does not."""

    max_batch_size: int
    max_length: Optional[int] = None
    buckets: Optional[List[int]] = None  # padded lengths the server uses
    max_text_bytes: Optional[int] = None
    query_max_length: Optional[int] = None
    special_tokens_per_pair: Optional[int] = None
    max_batch_tokens: Optional[int] = None  # padded tokens any model batch may hold
    length_classes: Optional[List[Tuple[int, int]]] = None  # (longest padded length, pairs per batch)
    max_windows_per_passage: Optional[int] = None
    max_windows_per_request: Optional[int] = None
    min_request_max_length: Optional[int] = None  # None: the server takes no per-request max_length
    # Each class's queue timeout (microseconds, length_classes order): how long the server itself
    # lets a request of that class wait before shedding it; None where an older server does not say.
    class_queue_timeouts_us: Optional[List[int]] = None

    def class_batch(self, length: int) -> int:
        """Pairs of `length` padded tokens that one model batch holds on this server (its length
        class); max_batch_size where the server publishes no classes."""
        for bound, batch in self.length_classes or ():
            if length <= bound:
                return min(batch, self.max_batch_size)
        return self.max_batch_size

    def for_request(self, max_length: Optional[int]) -> ServerLimits:
        """These limits as a request asking for its own max_length sees them (FlagReranker's rule
        for the query's share: max_length * 3 // 4), so the client packs and estimates by the
        pairs the server will really cut; the buckets and classes stay the server's. Raises
        InvalidInputError naming `max_length` and the server's range."""
        if max_length is None:
            return self
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise InvalidInputError(f"max_length: expected an int, got {type(max_length).__name__}")
        low, high = self.min_request_max_length, self.max_length
        if low is None or high is None:
            raise InvalidInputError(
                "max_length: this server does not take a per-request max_length (it predates it: re-export it)"
            )
        if not low <= max_length <= high:
            raise InvalidInputError(f"max_length: {max_length} must be in {low}..{high} (the server's max_length)")
        return replace(self, max_length=max_length, query_max_length=max_length * 3 // 4)

    def default_budget_s(self, base_s: float, max_length: Optional[int] = None) -> float:
        """A call's deadline when its caller set none: `base_s` (the client's default, sized for
        requests of the first length class) plus how much longer the server itself lets a request
        of the longest class this call can reach (pairs of up to `max_length` tokens, None: the
        server's) wait: that class's published queue timeout over the first class's. The server
        derives those timeouts from each class's worst drain (export/tensorrt_profiles.py
        queue_timeout_us), so a long class's own compute is covered as the server sizes it, and a
        client never gives up on a request the server still considers within its budget."""
        timeouts, classes = self.class_queue_timeouts_us, self.length_classes
        if not timeouts or not classes or len(timeouts) != len(classes):
            return base_s
        length = max_length if max_length is not None else self.max_length
        reached = timeouts[-1]  # the longest class (no max_length published: every class reachable)
        if length is not None:
            reached = next((t for (bound, _), t in zip(classes, timeouts) if length <= bound), timeouts[-1])
        return base_s + max(0, reached - timeouts[0]) / 1_000_000

    @property
    def publishes_pair_rules(self) -> bool:
        return None not in (self.max_length, self.query_max_length, self.special_tokens_per_pair)

    def pair_tokens(self, query_tokens: int, passage_tokens: int) -> int:
        """Tokens the server's tokenizer keeps for a pair, by its published rules (FlagReranker's:
        the query cut to its share, special tokens added, the passage cut to fit max_length)."""
        if self.max_length is None or self.query_max_length is None or self.special_tokens_per_pair is None:
            raise ModelNotReadyError(
                "the server does not publish max_length, query_max_length and "
                "special_tokens_per_pair: re-export it to count tokens client-side"
            )
        return min(
            min(query_tokens, self.query_max_length) + passage_tokens + self.special_tokens_per_pair, self.max_length
        )


def server_limits_from(response: ModelConfig) -> ServerLimits:
    """From get_model_config's answer: a dict (HTTP) or a ModelConfigResponse proto (gRPC)."""
    params: Mapping[str, str]
    if isinstance(response, dict):
        config: Mapping[str, Any] = response.get("config", response)
        batch = int(config.get("max_batch_size", 0))
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    else:
        batch = int(response.config.max_batch_size)
        params = {k: v.string_value for k, v in response.config.parameters.items()}
    if batch < 1:
        raise ModelNotReadyError("the model does not batch (max_batch_size 0): not the rerank ensemble")

    def number(key: str) -> Optional[int]:
        return int(params[key]) if params.get(key, "").isdigit() else None

    Param = contract.Param
    buckets = [int(b) for b in params[Param.LENGTH_BUCKETS].split(",")] if params.get(Param.LENGTH_BUCKETS) else None
    classes: Optional[List[Tuple[int, int]]] = None
    if params.get(Param.LENGTH_CLASSES):
        classes = [(int(b), int(n)) for b, n in (item.split(":") for item in params[Param.LENGTH_CLASSES].split(","))]
    return ServerLimits(
        batch,
        number(Param.MAX_LENGTH),
        buckets,
        number(Param.MAX_TEXT_BYTES),
        number(Param.QUERY_MAX_LENGTH),
        number(Param.SPECIAL_TOKENS_PER_PAIR),
        number(Param.MAX_BATCH_TOKENS),
        classes,
        number(Param.MAX_WINDOWS_PER_PASSAGE),
        number(Param.MAX_WINDOWS_PER_REQUEST),
        number(Param.MIN_REQUEST_MAX_LENGTH),
        [int(t) for t in params[Param.CLASS_QUEUE_TIMEOUTS_US].split(",")]
        if params.get(Param.CLASS_QUEUE_TIMEOUTS_US)
        else None,
    )
