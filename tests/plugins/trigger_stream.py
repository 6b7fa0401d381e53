"""A trigger's event stream, read the way the triggerer reads it: one event at a time.

The next event stays pending across waits, so a test can look for it, change something (land a
file, move the clock) and look again; ``close`` ends the stream as the triggerer does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any


class TriggerStream:
    """``trigger.run()`` with its next event as one pending future."""

    def __init__(self, trigger: Any, timeout: float) -> None:
        self.stream: AsyncGenerator[Any, None] = trigger.run()
        self.pending: asyncio.Future | None = None
        self.timeout = timeout

    def next_event(self) -> asyncio.Future:
        """The trigger's next event (a future that stays the same until ``event`` has taken it)."""
        if self.pending is None:
            self.pending = asyncio.ensure_future(self.stream.__anext__())
        return self.pending

    async def event(self) -> dict:
        """The next event's payload, waiting at most ``timeout`` seconds."""
        result = await asyncio.wait_for(asyncio.shield(self.next_event()), timeout=self.timeout)
        self.pending = None
        return result.payload

    async def close(self) -> None:
        """Cancel a pending event and end the stream."""
        if self.pending is not None and not self.pending.done():
            self.pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await self.pending
        await self.stream.aclose()
