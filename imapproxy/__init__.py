"""imapproxy: a local caching IMAP proxy for offline and mobile use."""

__version__ = "0.1.0"
