"""Command handlers, one module per family; importing this package registers them all."""

from imapproxy.server.handlers import (  # noqa: F401
    compress,
    fetch,
    general,
    list_command,
    mailboxes,
    messages,
    search,
    search_sort,
    search_thread,
)
