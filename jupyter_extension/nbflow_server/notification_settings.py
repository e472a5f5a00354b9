"""The server's notification settings: SMTP, delivery retries and run links.

A mixin of :class:`~nbflow_server.app.NbflowApp` (configured as ``c.NbflowApp.smtp_host``
and so on; see docs/notifications.md), kept apart so the app module holds the wiring only.
"""

from __future__ import annotations

from typing import Any

from traitlets import Bool, Float, Integer, TraitError, Unicode, validate
from traitlets.config import Configurable

__all__ = ["NotificationSettings"]


class NotificationSettings(Configurable):
    """SMTP server, delivery attempts and back-off, and the public URL of run links."""

    smtp_host = Unicode(
        "", help="SMTP server that sends notification emails (empty: email rules cannot send)."
    ).tag(config=True)

    smtp_port = Integer(
        25, help="Port of the SMTP server (587 with smtp_starttls, 465 with smtp_ssl)."
    ).tag(config=True)

    smtp_username = Unicode("", help="SMTP login user (empty: no login).").tag(config=True)

    smtp_password = Unicode("", help="SMTP login password.").tag(config=True)

    smtp_from = Unicode(
        "", help="From address of notification emails (empty: nbflow@<this host>)."
    ).tag(config=True)

    smtp_starttls = Bool(
        False, help="Upgrade the SMTP connection with STARTTLS before logging in."
    ).tag(config=True)

    smtp_ssl = Bool(False, help="Connect to the SMTP server over TLS (SMTPS, port 465).").tag(
        config=True
    )

    smtp_timeout = Float(30.0, help="Seconds an SMTP connection or command may take.").tag(
        config=True
    )

    notification_attempts = Integer(
        5, help="Attempts to deliver a notification before it is recorded as failed."
    ).tag(config=True)

    notification_backoff_seconds = Float(
        5.0,
        help="Wait after a failed delivery attempt; doubled after each further failure.",
    ).tag(config=True)

    notification_max_backoff_seconds = Float(
        300.0, help="Longest wait between two delivery attempts."
    ).tag(config=True)

    notification_webhook_timeout = Float(
        10.0, help="Seconds a webhook receiver has to answer one notification."
    ).tag(config=True)

    notification_link_url = Unicode(
        "",
        help=(
            "Public URL of this Jupyter server (https://jupyter.example.com/user/me/) for the "
            "links to runs in notifications: <url>lab?nbflow-run=<run id>. Default: the "
            "server's own URL."
        ),
    ).tag(config=True)

    @validate(
        "smtp_timeout",
        "notification_backoff_seconds",
        "notification_max_backoff_seconds",
        "notification_webhook_timeout",
    )
    def _positive_notification_setting(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value <= 0:
            raise TraitError(
                f"NbflowApp.{proposal['trait'].name}={value!r}: must be a positive number of seconds"
            )
        return value

    @validate("notification_attempts", "smtp_port")
    def _positive_notification_count(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 1:
            raise TraitError(f"NbflowApp.{proposal['trait'].name}={value!r}: must be at least 1")
        return value
