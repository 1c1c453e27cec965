"""A real SMTP server (aiosmtpd) on loopback that keeps what it receives: the login e-mails of
the legacy and the v2 login tests."""

from __future__ import annotations

import email
import email.message
import email.policy
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aiosmtpd.controller import Controller

from tests.conftest import free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.port = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's API
        self.messages.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.default))
        return "250 OK"

    def wait(self, before: int, timeout: float = 10.0) -> email.message.EmailMessage:
        """The one message received after the first `before`."""
        deadline = time.monotonic() + timeout
        while len(self.messages) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.messages) == before + 1
        return self.messages[-1]


@contextmanager
def running_inbox() -> Iterator[Inbox]:
    box = Inbox()
    ctl = Controller(box, hostname="127.0.0.1", port=free_port())
    ctl.start()
    box.port = ctl.port
    try:
        yield box
    finally:
        ctl.stop()
