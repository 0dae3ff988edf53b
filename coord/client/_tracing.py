"""OpenTelemetry spans for client calls and session transitions, named ``coord.client.<op>``.

Only opentelemetry-api is used: without a configured SDK every span is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

_tracer = trace.get_tracer("coord.client")


@contextmanager
def span(op: str, **attributes: AttributeValue) -> Iterator[trace.Span]:
    """A span named ``coord.client.<op>``; an exception escaping the block is recorded and marks it as an error."""
    with _tracer.start_as_current_span(f"coord.client.{op}", attributes=attributes) as current:
        yield current
