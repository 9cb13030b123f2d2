"""Command handlers, one module per family; importing this package registers them all."""

from imapproxy.server.handlers import fetch, general, mailboxes, messages, search  # noqa: F401
