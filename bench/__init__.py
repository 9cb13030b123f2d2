"""Benchmark of imapproxy against a direct Dovecot connection; run ``python -m bench.run``."""
