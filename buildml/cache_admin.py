"""Maintenance of the local store: verify blobs and manifests."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class VerifyReport:
    """What `buildml cache verify` found."""

    blobs: int = 0
    actions: int = 0
    corrupt_blobs: list = field(default_factory=list)
    bad_actions: list = field(default_factory=list)  # (key, reason)

    @property
    def ok(self) -> bool:
        return not self.corrupt_blobs and not self.bad_actions


def verify(store, repair: bool = False) -> VerifyReport:
    """Re-hash every blob; check every manifest parses and names blobs that exist."""
    report = VerifyReport()
    for digest in store.iter_blobs():
        report.blobs += 1
        if not store.verify_blob(digest):
            report.corrupt_blobs.append(digest)
            if repair:
                store._quarantine(digest)
    for key in store.iter_actions():
        report.actions += 1
        manifest = store.get_action(key)
        if manifest is None:
            report.bad_actions.append((key, "unreadable or mismatched manifest"))
            continue
        missing = [p for p, m in manifest.get("outputs", {}).items() if not store.has_blob(m["digest"])]
        if missing:
            report.bad_actions.append((key, f"missing blobs for {', '.join(missing[:3])}"))
    return report
