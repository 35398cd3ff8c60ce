"""The one Logger, Metrics and Tracer of every function (service name from POWERTOOLS_SERVICE_NAME).

The Tracer is the costly one: Powertools' ``Tracer()`` imports the X-Ray SDK even when tracing is
off (it builds its provider before looking at ``disabled``), and when tracing is on it patches
botocore and requests, which imports them (about 240 ms of a cold start on the project's machine,
bench/README.md). So ``tracer`` here is a stand-in with the same decorators:

- where tracing is off (``POWERTOOLS_TRACE_DISABLED``, or outside Lambda: tests, the local stack,
  ``sam local``; Powertools' own rules) it never imports the X-Ray SDK and its decorators add nothing;
- where tracing is on, the Powertools Tracer is built, and the libraries patched, on the first
  invocation instead of at import, before the handler runs, so every AWS and Particle call of that
  invocation is still traced. Where the initialisation is off the request path (SnapStart, where it
  happens before the snapshot, and provisioned concurrency) it is built at import, as before.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.shared import constants
from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

F = TypeVar("F", bound=Callable[..., Any])

# AWS_LAMBDA_INITIALIZATION_TYPE values whose initialisation does not delay a request (Lambda
# developer guide, "Defined runtime environment variables"; "snap-start" under SnapStart).
EAGER_INITIALIZATION_TYPES = frozenset({"snap-start", "provisioned-concurrency"})


def tracing_enabled(env: dict[str, str] | None = None) -> bool:
    """Whether Powertools would trace here: the rules of ``Tracer._is_tracer_disabled`` (3.x)."""
    env = dict(os.environ if env is None else env)
    if resolve_truthy_env_var_choice(env=env.get(constants.TRACER_DISABLED_ENV, "false")):
        return False
    in_lambda = bool(env.get(constants.LAMBDA_TASK_ROOT_ENV))
    emulated = bool(env.get(constants.SAM_LOCAL_ENV) or env.get(constants.CHALICE_LOCAL_ENV))
    return in_lambda and not emulated


class LazyTracer:
    """The Powertools Tracer, built on first use, and only where tracing is on."""

    def __init__(self, enabled: bool | None = None, **tracer_options: Any) -> None:
        self.enabled = tracing_enabled() if enabled is None else enabled
        self._options = tracer_options
        self._tracer: Tracer | None = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        """Build the Powertools Tracer now (a no-op where tracing is off or it is already built)."""
        if self.enabled and self._tracer is None:
            with self._lock:
                if self._tracer is None:
                    from aws_lambda_powertools import Tracer

                    self._tracer = Tracer(**self._options)

    @property
    def tracer(self) -> Tracer | None:
        """The Powertools Tracer where tracing is on (built if need be), else None."""
        self.setup()
        return self._tracer

    def capture_lambda_handler(
        self,
        lambda_handler: F | None = None,
        capture_response: bool | None = None,
        capture_error: bool | None = None,
    ) -> Any:
        """``Tracer.capture_lambda_handler``, applied when the handler is first called."""
        if lambda_handler is None:
            return functools.partial(
                self.capture_lambda_handler, capture_response=capture_response, capture_error=capture_error
            )
        return self._deferred(
            lambda_handler,
            lambda tracer, fn: tracer.capture_lambda_handler(
                fn, capture_response=capture_response, capture_error=capture_error
            ),
        )

    def capture_method(
        self, method: F | None = None, capture_response: bool | None = None, capture_error: bool | None = None
    ) -> Any:
        """``Tracer.capture_method`` (synchronous functions), applied when the method is first called."""
        if method is None:
            return functools.partial(
                self.capture_method, capture_response=capture_response, capture_error=capture_error
            )
        return self._deferred(
            method,
            # Powertools' overloads of capture_method leave out a method given together with its
            # options, which its implementation takes (aws_lambda_powertools/tracing/tracer.py).
            lambda tracer, fn: tracer.capture_method(  # type: ignore[call-overload]
                fn, capture_response=capture_response, capture_error=capture_error
            ),
        )

    def put_annotation(self, key: str, value: str | int | float | bool) -> None:
        if self.tracer is not None:
            # int and float are numbers.Number by ABC registration, which mypy does not see.
            self.tracer.put_annotation(key=key, value=value)  # type: ignore[arg-type]

    def put_metadata(self, key: str, value: Any, namespace: str | None = None) -> None:
        if self.tracer is not None:
            self.tracer.put_metadata(key=key, value=value, namespace=namespace)

    def _deferred(self, fn: F, decorate: Callable[[Tracer, F], Callable[..., Any]]) -> F:
        if not self.enabled:
            return fn
        decorated: list[Callable[..., Any]] = []

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not decorated:
                tracer = self.tracer
                decorated.append(decorate(tracer, fn) if tracer is not None else fn)
            return decorated[0](*args, **kwargs)

        return cast(F, wrapper)


logger = Logger()
metrics = Metrics(namespace="Tokenflow")
# At DEBUG, urllib3 logs each request line, query string included (a Blynk read carries its AuthToken
# there, tokenflow.blynk), and botocore logs every response body (a token item's GetItem holds the
# AuthToken). Pinned at WARNING in every function, whatever level the runtime gives the root logger
# (Lambda's ApplicationLogLevel DEBUG sets it); tests/integration/test_blynk_liveness.py proves it.
for _noisy in ("urllib3", "botocore", "boto3"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)
tracer = LazyTracer()
if tracer.enabled and os.environ.get(constants.LAMBDA_INITIALIZATION_TYPE) in EAGER_INITIALIZATION_TYPES:
    tracer.setup()
