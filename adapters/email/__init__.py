"""The email entrance: the persona's mailbox (IMAP IDLE in, SMTP out), run by `mirror run email`.

People write to the persona's address; each unseen mail in INBOX becomes an `Incoming`
(conversation: the thread's root Message-ID; author: the sender's address) and is answered
in its thread (In-Reply-To, References, one "Re:", to Reply-To or From) through the outbox,
so a crash neither loses a mail nor answers it twice. It never feeds a mail loop: mail from
robots, lists, bounces, receipts, auto-replies, the persona itself or (with
`allow_senders`) unknown senders is recorded and never answered (`why_not_answer`). The
package is the only code importing aioimaplib and aiosmtplib (`transport`, used by
`runtime`); `manifest`, `reading` and `writing` are pure, so importing the package or its
manifest loads no mail library; what the persona says and who may act is decided in `bot/`.

Coordinator by email (`[coordinator] address = "email:ADDR"`): surfaced items are mailed to
ADDR, and a mail from ADDR whose first new line is a command (`/resolve 12 A`) runs it. The
From header of a mail can be forged by anyone who knows the coordinator's address, and
nothing here authenticates it beyond what the receiving server checked (SPF/DKIM/DMARC are
not verified by this entrance). Prefer a chat coordinator (Telegram or Discord, where the
platform authenticates the account) and use mail only for reading the items.

Settings: `[entrances.email]` (address, username, imap_host/port, smtp_host/port, security
ssl | starttls | none — none only to 127.0.0.1, localhost or ::1 — allow_senders,
max_message_bytes, poll_interval_s); the password comes from MIRROR_EMAIL_PASSWORD.
"""
