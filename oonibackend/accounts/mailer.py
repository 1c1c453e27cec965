"""Login links by email (smtplib in a worker thread: a rare call, no event-loop blocking)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from html import escape

from oonibackend.config import SmtpConfig

SUBJECT = "OONI Account activation"  # legacy user_register
SUBJECT_V2 = "OONI Account activation email"  # v2 user-login (docs/current_services.md §4)


class MailError(Exception):
    pass


def login_message(source: str, to: str, link: str, subject: str = SUBJECT) -> EmailMessage:
    """OONI's login e-mail: the same words, and the HTML link text `Please login here` that
    OONI's clients and tests look for (docs/api.md §2.6, §3.2)."""
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = source
    msg["To"] = to
    msg.set_content(
        "Welcome to OONI.\n\n"
        f"Please login by following {link}\n\n"
        "The link can be used on multiple devices and will expire in 24 hours.\n")
    msg.add_alternative(
        "<html><head></head><body><p>Welcome to OONI</p>"
        f'<p><a href="{escape(link, quote=True)}">Please login here</a></p>'
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


async def send_login_link(cfg: SmtpConfig, to: str, link: str, subject: str = SUBJECT) -> None:
    await asyncio.to_thread(_send, cfg, login_message(cfg.source_address, to, link, subject))
