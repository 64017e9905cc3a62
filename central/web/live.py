"""Server-sent events for the live parts of the console (estate, locker grid, events, alerts).

Each stream re-renders its fragment from the database about once a second and sends it only when it
changed, as an SSE event whose name the page's `sse-swap` attribute picks up. Reading the database rather
than listening to one worker's MQTT traffic means every worker serves the same truth (events of one
gateway land on different workers). A stream ends after STREAM_S (the browser reconnects and gets the
fragment at once), when the browser goes away, or when its session has ended — so a signed-out or removed
user stops receiving updates and a stopping central is never held up by an open page.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Connection

from central.context import CentralContext
from central.services.users import Session
from central.web.auth import SESSION_COOKIE, live_session

POLL_S = 1.0
STREAM_S = 30.0
#: Sent first: how long the browser waits before reconnecting (milliseconds).
RETRY_MS = 1000


def sse_message(event: str, html: str) -> str:
    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {event}\n{data}\n"


def stream(request: Request, event: str, render: Callable[[Connection, Session], str]) -> StreamingResponse:
    """An SSE response sending `render(connection, session)` as `event` whenever it changes."""
    context: CentralContext = request.app.state.context
    token = request.cookies.get(SESSION_COOKIE)

    def current() -> str | None:
        session = live_session(context, token)
        if session is None:
            return None
        with context.engine.connect() as connection:
            return render(connection, session)

    async def messages() -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        last: str | None = None
        ends = time.monotonic() + STREAM_S
        while time.monotonic() < ends and not await request.is_disconnected():
            html = await asyncio.to_thread(current)
            if html is None:
                return
            if html != last:
                yield sse_message(event, html)
                last = html
            await asyncio.sleep(POLL_S)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(messages(), media_type="text/event-stream", headers=headers)
