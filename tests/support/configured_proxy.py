"""``imapproxy serve --config FILE``: the proxy as a gateway operator runs it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.support.proxy import ProxyProcess


class ConfiguredProxy(ProxyProcess):
    """A ProxyProcess started with a configuration file instead of flags.

    ``ports`` are the plain listeners the file names (the first one is ``port``); the
    file itself names the state directory, which should be ``state_dir``.
    """

    def __init__(self, config_file: Path, state_dir: Path, ports: Sequence[int]) -> None:
        super().__init__("(from the configuration file)", state_dir, listen_port=ports[0])
        self.config_file = config_file
        self._ports = list(ports)

    def argv(self) -> list[str]:
        return [*self.command, "serve", "--config", str(self.config_file), *self.extra_args]

    def ports(self) -> list[int]:
        return list(self._ports)
