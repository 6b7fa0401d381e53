"""Airflow notifier for pipeline events (gate failed, drift, promotion, quarantine).

A ``BaseNotifier`` like any other, so it can also be used as a task callback. The channel comes from
the spec's ``notifications`` section: ``smtp`` sends an e-mail through the SMTP provider's
``SmtpNotifier`` (connection ``smtp_conn_id``), ``log`` writes the message to the task log.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseNotifier, Context

log = logging.getLogger(__name__)


class PipelineEventNotifier(BaseNotifier):
    """Sends one ``include.mlops.notifications.Notice`` over the spec's channel."""

    template_fields = ("smtp_conn_id",)

    def __init__(
        self,
        *,
        notice: Any,
        notifier: str = "log",
        to: list[str] | None = None,
        from_email: str | None = None,
        smtp_conn_id: str = "smtp_default",
    ) -> None:
        """Only store the values: the SMTP provider is imported when a message is sent."""
        super().__init__()
        self.notice = notice
        self.notifier = notifier
        self.to = list(to or [])
        self.from_email = from_email
        self.smtp_conn_id = smtp_conn_id

    def notify(self, context: Context) -> None:
        """Send the notice by e-mail (``smtp``) or write it to the task log (``log``)."""
        if self.notifier == "smtp":
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            SmtpNotifier(
                to=self.to,
                from_email=self.from_email,
                subject=self.notice.subject,
                html_content=self.notice.html(),
                smtp_conn_id=self.smtp_conn_id,
            ).notify(context)
            log.info("Sent the %s notification to %s", self.notice.event, ", ".join(self.to))
        else:
            log.info("NOTIFICATION %s\n%s", self.notice.subject, self.notice.text())
