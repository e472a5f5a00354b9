"""Sending one notification: a webhook POST (httpx) or an email (the stdlib's smtplib).

Each call is one attempt; it returns on success and raises :class:`DeliveryError` with
a one-line reason otherwise (the notifier records it and retries with backoff).
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import httpx

from nbflow.exceptions import NbflowError
from nbflow.notifications.models import Action, Automation

__all__ = ["DeliveryError", "Sender", "SMTPSettings", "send_email", "send_webhook"]


class DeliveryError(NbflowError):
    """One attempt to deliver a notification failed; ``str()`` says why in one line."""


@dataclass(frozen=True)
class SMTPSettings:
    """Where and how to send email (``NbflowApp.smtp_*``)."""

    host: str = ""
    port: int = 25
    username: str = ""
    password: str = ""
    sender: str = ""
    starttls: bool = False
    ssl: bool = False
    timeout: float = 30.0

    @property
    def from_address(self) -> str:
        """The From address: the configured one, else ``nbflow@<this host>``."""
        return self.sender or f"nbflow@{socket.getfqdn()}"


def send_webhook(url: str, body: dict[str, Any], *, timeout: float = 10.0) -> None:
    """POST ``body`` as JSON to ``url``; any answer but 2xx is a failure."""
    try:
        response = httpx.post(url, json=body, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"POST {url}: {type(exc).__name__}: {exc}") from exc
    if not 200 <= response.status_code < 300:
        detail = response.text.strip().replace("\n", " ")[:200]
        raise DeliveryError(
            f"POST {url} answered HTTP {response.status_code}" + (f": {detail}" if detail else "")
        )


def send_email(settings: SMTPSettings, to: list[str], subject: str, text: str) -> None:
    """Send a plain-text email to ``to`` through the SMTP server of ``settings``."""
    if not settings.host:
        raise DeliveryError(
            "no SMTP server configured: set c.NbflowApp.smtp_host (and smtp_port, "
            "smtp_username, smtp_password, smtp_from, smtp_starttls)"
        )
    message = EmailMessage()
    message["From"] = settings.from_address
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="nbflow")
    message.set_content(text)
    where = f"SMTP {settings.host}:{settings.port}"
    try:
        smtp: smtplib.SMTP
        if settings.ssl:
            smtp = smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                timeout=settings.timeout,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        with smtp:
            if settings.starttls and not settings.ssl:
                smtp.starttls(context=ssl.create_default_context())
            if settings.username:
                smtp.login(settings.username, settings.password)
            refused = smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"{where}: {type(exc).__name__}: {exc}") from exc
    if refused:
        raise DeliveryError(f"{where} refused recipients: {', '.join(sorted(refused))}")


@dataclass(frozen=True)
class Sender:
    """Send a rule's rendered message by its action."""

    smtp: SMTPSettings = SMTPSettings()
    webhook_timeout: float = 10.0

    def send(self, rule: Automation, message: dict[str, Any]) -> None:
        """Deliver ``message`` (``subject``, ``text``, ``payload``) as ``rule`` says."""
        if rule.action is Action.WEBHOOK:
            assert rule.webhook_url is not None
            body = {"text": message["text"]} if rule.webhook_slack else message["payload"]
            send_webhook(rule.webhook_url, body, timeout=self.webhook_timeout)
        else:
            send_email(self.smtp, list(rule.email_to), message["subject"], message["text"])
