"""The socket and the HTTP protocol under the app: bind before the model loads, then uvicorn with an h11
protocol that puts a deadline on reading each request and answers malformed framing in our error shape.

It subclasses uvicorn's private H11Protocol: pyproject bounds uvicorn to the minor versions it was tested on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
import sys
from http import HTTPStatus
from typing import Any

from ..errors import RerankExportError
from .errors import error_body
from .requests import DEFAULT_LIMITS, Limits

log = logging.getLogger(__name__)


class PortUnavailable(RerankExportError):
    """The address to serve on cannot be bound (in use, not ours, not an address of this machine)."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a port in use is one line, before any 'serving'."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: rebinding after a restart
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = "stop what runs there or pick another --port" if exc.errno == 98 else "check --host and --port"
        raise PortUnavailable(f"cannot serve on {host}:{port}: {exc.strerror or exc}; {hint}") from None
    sock.set_inheritable(True)
    return sock


def server_config(app: Any, host: str, port: int, limits: Limits = DEFAULT_LIMITS,
                  log_level: str = "info") -> Any:
    """uvicorn's Config for `app`: h11 with read deadlines (see read_deadline_protocol)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level,
                          http=functools.partial(read_deadline_protocol(), read_timeout=limits.read_timeout))


def run_server(app: Any, sock: socket.socket, log_level: str = "info",
               limits: Limits = DEFAULT_LIMITS) -> None:
    """uvicorn on an already-bound socket (see bind)."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    uvicorn.Server(server_config(app, host, port, limits, log_level)).run(sockets=[sock])


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps(error_body(408, f"the request's headers did not arrive within this server's {seconds:g} s "
                                      "(--read-timeout)")).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body))


def framing_error(exc: BaseException | None) -> tuple[int, str]:
    """Status and message for a request h11 cannot parse; h11's own error says what is malformed."""
    hint = getattr(exc, "error_status_hint", 400)
    status = hint if 400 <= hint < 500 else 400  # h11 hints 501 for an unknown Transfer-Encoding: a client's fault
    what = str(exc) or type(exc).__name__
    what = what if len(what) <= 120 else f"{what[:120]}..."
    if status == 431:
        what = f"its header block is over this server's limit: {what}"
    return status, f"malformed HTTP request ({what}); the connection is closed: fix the request's framing"


def _framing_answer(conn: Any, status: int, message: str) -> bytes:
    """`message` in our error shape, as h11 frames it on `conn` (which then expects the connection to close)."""
    import h11

    body = json.dumps(error_body(status, message)).encode()
    head = h11.Response(status_code=status, reason=HTTPStatus(status).phrase.encode(),
                        headers=[(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                                 (b"connection", b"close")])
    return conn.send(head) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())


@functools.lru_cache(maxsize=1)
def read_deadline_protocol() -> type:
    """uvicorn's h11 protocol with a deadline on reading each request.

    uvicorn bounds only the idle time between requests (timeout_keep_alive) and has no header timeout: a
    client that sends half a header block, or stops mid-body after being answered without its body being
    read (a 413 or 415), holds its connection for ever. Here each wait for a request (from the connection,
    or from the previous answer) has `read_timeout` for the headers to arrive; past it the connection gets a
    408 and is closed. The body's own deadline is body_deadline's, inside the app, which answers a 408; if
    the app has already answered, the protocol closes the connection after a second `read_timeout`.

    A request h11 cannot parse (bad or conflicting Content-Length, two Host headers, a header block over h11's
    limit, a bad chunk size) is answered in our JSON error shape, not uvicorn's plain text, unless an answer
    has already begun; then the connection is only closed.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class ReadDeadlineH11(H11Protocol):
        def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.read_timeout = read_timeout
            self.read_timer: asyncio.TimerHandle | None = None
            self.waiting_after: Any = None  # the request answered before this wait (None: a new connection)

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.arm_read_timer()

        def on_response_complete(self) -> None:
            self.arm_read_timer()  # before super(): a pipelined request may start in there
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.read_timer is not None:
                self.read_timer.cancel()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            # uvicorn calls this inside its `except h11.RemoteProtocolError`: that error says what is malformed
            status, message = framing_error(sys.exc_info()[1])
            log.info("closing a connection from %s: %s", self.client, message)
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True  # its app, if still running, sees a disconnect and answers nothing
                cycle.message_event.set()
            if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                try:
                    self.transport.write(_framing_answer(self.conn, status, message))
                except h11.LocalProtocolError:  # h11 will not frame an answer in this state: closing says enough
                    pass
            self.transport.close()

        def arm_read_timer(self) -> None:
            if self.read_timer is not None:
                self.read_timer.cancel()
            self.waiting_after = self.cycle
            self.read_timer = self.loop.call_later(self.read_timeout, self.read_timed_out)

        def read_timed_out(self) -> None:
            self.read_timer = None
            cycle = self.cycle
            if self.transport.is_closing() or (cycle is not self.waiting_after and not cycle.more_body):
                return  # gone, or the whole request arrived
            if cycle is self.waiting_after:  # no new request's headers: a half-sent or never-sent one
                if self.conn.trailing_data[0]:  # bytes of a request arrived: say why it is closed
                    self.transport.write(_timeout_response(self.read_timeout))
                log.info("closing a connection from %s: no complete request headers within %gs",
                         self.client, self.read_timeout)
                self.transport.close()
            elif cycle.response_complete:  # answered without its body, which is still coming: stop waiting
                log.info("closing a connection from %s: the rest of an answered request's body never came",
                         self.client)
                self.transport.close()
            else:  # the app is reading the body under body_deadline, which will answer a 408; a backstop
                self.read_timer = self.loop.call_later(self.read_timeout, self.read_timed_out)

    return ReadDeadlineH11
