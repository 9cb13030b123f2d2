"""protocol/ must stay a sans-IO core: no Twisted, LMDB, logging or other imapproxy modules."""

from __future__ import annotations

import ast
from pathlib import Path

import imapproxy.protocol

FORBIDDEN = ("twisted", "lmdb", "logging")


def test_protocol_imports_nothing_forbidden() -> None:
    package = Path(imapproxy.protocol.__file__).parent
    sources = sorted(package.glob("*.py"))
    assert sources
    for path in sources:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: must stay inside protocol/
                    assert node.level == 1, f"{path.name} imports outside protocol/"
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                assert root not in FORBIDDEN, f"{path.name} imports {name}"
                if root == "imapproxy":
                    assert name.startswith("imapproxy.protocol"), f"{path.name} imports {name}"


def test_public_api_is_exported() -> None:
    for name in imapproxy.protocol.__all__:
        assert hasattr(imapproxy.protocol, name), name
