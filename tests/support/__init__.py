"""Test and benchmark harness: a real Dovecot, a mail corpus, a TCP relay, the proxy runner.

- ``dovecot.Dovecot``: a private Dovecot instance (plain + implicit TLS ports).
- ``corpus``: ``make_messages``, ``seed_mailbox``, ``seed_standard_account``.
- ``relay.Relay``: byte-counting TCP relay that can cut or stall the upstream link.
- ``proxy.ProxyProcess``: ``imapproxy serve`` as a subprocess.
"""
