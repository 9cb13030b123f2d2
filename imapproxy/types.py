"""Strong ID types shared by the store, the sync engine and the server.

Mixing a UID with a sequence number, or a local UID with an upstream one, is the
classic IMAP bug; distinct types let mypy catch it.
"""

from typing import NewType

AccountId = NewType("AccountId", int)
MailboxId = NewType("MailboxId", int)
BlobId = NewType("BlobId", int)
UID = NewType("UID", int)
UpstreamUID = NewType("UpstreamUID", int)
SeqNum = NewType("SeqNum", int)
UIDValidity = NewType("UIDValidity", int)
ModSeq = NewType("ModSeq", int)
