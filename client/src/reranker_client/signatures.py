"""One parameter list for a sync method and its async twin. Both clients' rerank/score/
score_details, and Haystack's run and run_async, must take exactly the same arguments, and those
must be visible to callers, to type checkers and to frameworks that read signatures (Haystack
builds a component's input sockets from them). Written out twice, the lists could drift apart;
`same_parameters` lets them be declared once."""

from __future__ import annotations

import inspect
import sys
from typing import Any, Callable, TypeVar, get_type_hints

if sys.version_info >= (3, 10):
    from typing import Concatenate, ParamSpec
else:  # typing_extensions before 4.12 breaks on 3.13 (ParamSpec.__default__), so only where needed
    from typing_extensions import Concatenate, ParamSpec

P = ParamSpec("P")
R = TypeVar("R")


def same_parameters(
    declared: Callable[Concatenate[Any, P], Any],
) -> Callable[[Callable[..., R]], Callable[Concatenate[Any, P], R]]:
    """Gives the decorated method the parameters of the method `declared`. The method is written
    `(self, *args: Any, **kwargs: Any)` and passes its arguments on to `declared`, which binds and
    checks them:

        @same_parameters(ClientBase._rerank_job)
        async def rerank(self, *args: Any, **kwargs: Any) -> List[RerankResult]:
            job = self._rerank_job(*args, **kwargs)
            ...

    Type checkers see them through the returned type (a ParamSpec): a call is checked against
    `declared`'s parameters, with its return type the method's own. At run time, inspect.signature
    and typing.get_type_hints read `declared`'s parameters, with the method's own return
    annotation, and its docstring is `declared`'s unless it has one. The method itself is
    returned, not a wrapper: an `async def` stays a coroutine function, and a call costs nothing
    more. A call with arguments that do not fit raises `declared`'s TypeError (it names
    `declared` and the argument), for an async method when awaited, as its other input errors."""

    def same(method: Callable[..., R]) -> Callable[Concatenate[Any, P], R]:
        returns = get_type_hints(method).get("return", inspect.Signature.empty)
        # Resolved now, where `declared` is defined: the method's module need not import the
        # names its parameters' annotations use, and the signature carries types, not strings
        # that only make sense in `declared`'s module.
        hints = get_type_hints(declared, include_extras=True)
        declared_signature = inspect.signature(declared)
        parameters = [
            p.replace(annotation=hints.get(p.name, p.annotation)) for p in declared_signature.parameters.values()
        ]
        method.__signature__ = declared_signature.replace(  # type: ignore[attr-defined]
            parameters=parameters, return_annotation=returns
        )
        hints.pop("return", None)
        if returns is not inspect.Signature.empty:
            hints["return"] = returns
        method.__annotations__ = hints
        if method.__doc__ is None:
            method.__doc__ = declared.__doc__
        return method

    return same
