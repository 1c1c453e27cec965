"""Login links by email (smtplib in a worker thread: a rare call, no event-loop blocking)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from html import escape

from oonibackend.config import SmtpConfig

SUBJECT = "OONI Account activation"


class MailError(Exception):
    pass


def login_message(source: str, to: str, link: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = SUBJECT
    msg["From"] = source
    msg["To"] = to
    msg.set_content(
        "Please login here:\n\n"
        f"{link}\n\n"
        "The link can be used on multiple devices and will expire in 24 hours.\n")
    msg.add_alternative(
        "<html><body><p>Please login by clicking "
        f'<a href="{escape(link, quote=True)}">this link</a>.</p>'
        "<p>The link can be used on multiple devices and will expire in 24 hours.</p>"
        "</body></html>", subtype="html")
    return msg


def _send(cfg: SmtpConfig, msg: EmailMessage) -> None:
    try:
        if cfg.ssl:
            client: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout,
                                                    context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        with client:
            client.ehlo()
            if cfg.starttls and not cfg.ssl:
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if cfg.username:
                client.login(cfg.username, cfg.password)
            client.send_message(msg)
    except (OSError, smtplib.SMTPException) as e:
        raise MailError(str(e)) from e


async def send_login_link(cfg: SmtpConfig, to: str, link: str) -> None:
    await asyncio.to_thread(_send, cfg, login_message(cfg.source_address, to, link))
