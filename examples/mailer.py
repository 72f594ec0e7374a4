"""A minimal mailer for auth_ext's outbox: listen on the auth_email channel, send every
unsent message of auth.email_outbox, mark it sent.

    MAILER_DSN="dbname=app user=mailer" SMTP_HOST=localhost python examples/mailer.py

The login role needs service_role (GRANT service_role TO mailer). Without SMTP_HOST the
messages are printed instead of sent. Rows are claimed with FOR UPDATE SKIP LOCKED, so
several mailers can run side by side, and a message whose sending fails stays unsent and
is retried at the next notification or start.
"""

import json
import os
import smtplib
from email.message import EmailMessage

import psycopg

SUBJECTS = {
    "signup": "Confirm your sign-up",
    "invite": "You have been invited",
    "magiclink": "Your sign-in link",
    "recovery": "Reset your password",
    "email_change": "Confirm your new email address",
}


def render(recipient, action, message):
    """The email for one outbox row: a link carrying the token hash, and the code."""
    data = message["email_data"]
    link = f"{data['redirect_to'] or data['site_url']}?token_hash={data['token_hash']}&type={action}"
    mail = EmailMessage()
    mail["To"] = recipient
    mail["From"] = os.environ.get("MAILER_FROM", "no-reply@localhost")
    mail["Subject"] = SUBJECTS.get(action, "Your code")
    mail.set_content(f"Follow this link: {link}\n\nOr enter this code: {data['token']}\n")
    return mail


def smtp_send(mail):
    host = os.environ.get("SMTP_HOST")
    if not host:
        print(mail)
        return
    with smtplib.SMTP(host, int(os.environ.get("SMTP_PORT", "25"))) as smtp:
        smtp.send_message(mail)


def drain(conn, send):
    """Send every unsent message, one transaction each; returns how many were sent."""
    sent = 0
    while True:
        with conn.transaction():
            row = conn.execute(
                "select id, recipient, email_action_type, message from auth.email_outbox"
                " where sent_at is null order by id limit 1 for update skip locked"
            ).fetchone()
            if row is None:
                return sent
            msg_id, recipient, action, message = row
            if isinstance(message, str):
                message = json.loads(message)
            send(render(recipient, action, message))
            conn.execute("update auth.email_outbox set sent_at = now() where id = %s", (msg_id,))
            sent += 1


def run(dsn, send=smtp_send, stop_after=None, timeout=None):
    """Drain the outbox, then wait for notifications; stop after `stop_after` of them, or
    after `timeout` seconds without one."""
    with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(dsn, autocommit=True) as worker:
        worker.execute("set role service_role")
        listener.execute("listen auth_email")
        drain(worker, send)
        for _ in listener.notifies(stop_after=stop_after, timeout=timeout):
            drain(worker, send)


if __name__ == "__main__":
    run(os.environ.get("MAILER_DSN", ""))
