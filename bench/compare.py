"""Equality of proxy answers and direct answers: a fast wrong answer is worth nothing.

Strict checks fail the run: the folder list, STATUS MESSAGES/UNSEEN, EXISTS, every
line of the message list (flags without \\Recent, INTERNALDATE, size, ENVELOPE,
BODYSTRUCTURE, compared by position because the proxy numbers UIDs itself) and the
fetched bodies. UIDs and UIDNEXT are only reported when they differ: a proxy may
legitimately renumber, as long as it does so consistently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.workload import Answers

MAX_DETAILS = 5


@dataclass
class Comparison:
    """Differences found: ``problems`` fail the benchmark, ``notes`` are informational."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _short(value: object, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _compare_folders(direct: Answers, proxy: Answers, out: Comparison) -> None:
    if direct.folders != proxy.folders:
        out.problems.append(f"LIST differs: direct {direct.folders} proxy {proxy.folders}")
    for name, expected in direct.status.items():
        got = proxy.status.get(name)
        if got is None:
            out.problems.append(f"STATUS {name!r} missing through the proxy")
            continue
        for item in ("MESSAGES", "UNSEEN"):
            if got.get(item) != expected.get(item):
                out.problems.append(
                    f"STATUS {name!r} {item}: direct {expected.get(item)} proxy {got.get(item)}"
                )
        if got.get("UIDNEXT") != expected.get("UIDNEXT"):
            out.notes.append(
                f"STATUS {name!r} UIDNEXT: direct {expected.get('UIDNEXT')} "
                f"proxy {got.get('UIDNEXT')}"
            )


def _compare_messages(direct: Answers, proxy: Answers, out: Comparison) -> None:
    if direct.exists != proxy.exists:
        out.problems.append(f"SELECT EXISTS: direct {direct.exists} proxy {proxy.exists}")
    if len(direct.messages) != len(proxy.messages):
        out.problems.append(
            f"message list length: direct {len(direct.messages)} proxy {len(proxy.messages)}"
        )
    # strict=False: a length mismatch is already reported above; compare the common part.
    pairs = zip(direct.messages, proxy.messages, strict=False)
    differing = [i for i, (d, p) in enumerate(pairs) if d != p]
    if differing:
        out.problems.append(f"{len(differing)} message list entries differ")
        for i in differing[:MAX_DETAILS]:
            d, p = direct.messages[i], proxy.messages[i]
            for attr in ("flags", "internaldate", "size", "envelope", "bodystructure"):
                if getattr(d, attr) != getattr(p, attr):
                    out.problems.append(
                        f"  #{i + 1} {attr}: direct {_short(getattr(d, attr))} "
                        f"proxy {_short(getattr(p, attr))}"
                    )
    if direct.uids != proxy.uids:
        out.notes.append("UIDs differ from the upstream's (proxy-local numbering)")


def _compare_bodies(direct: Answers, proxy: Answers, out: Comparison) -> None:
    if len(direct.bodies) != len(proxy.bodies):
        out.problems.append(
            f"bodies fetched: direct {len(direct.bodies)} proxy {len(proxy.bodies)}"
        )
    wrong = [(d, p) for d, p in zip(direct.bodies, proxy.bodies, strict=False) if d != p]
    if wrong:
        out.problems.append(f"{len(wrong)} of {len(direct.bodies)} bodies differ")
        for (pos, dsize, dhash), (_, psize, phash) in wrong[:MAX_DETAILS]:
            out.problems.append(
                f"  body #{pos + 1}: direct {dsize} bytes sha256 {dhash[:12]}, "
                f"proxy {psize} bytes sha256 {phash[:12]}"
            )


def compare(direct: Answers, proxy: Answers) -> Comparison:
    """Compare one proxy session's answers with the direct answers of the same workload."""
    out = Comparison()
    _compare_folders(direct, proxy, out)
    _compare_messages(direct, proxy, out)
    _compare_bodies(direct, proxy, out)
    return out
