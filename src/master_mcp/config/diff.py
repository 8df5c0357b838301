"""What changed between two configs: which servers came, went or changed (by key name, never by value)."""

from __future__ import annotations

from dataclasses import dataclass, field

from master_mcp.config.models import MasterConfig, ServerConfig

# Settings a running master cannot take over without a restart (ports, the front's path, inbound auth, stores).
_RESTART_SECTIONS = ("master", "routing")


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # server id -> the names of the keys whose values differ (values are not shown: they may be secrets)
    changed: dict[str, list[str]] = field(default_factory=dict)
    # dotted keys outside `servers` that differ; they take effect at the next restart
    needs_restart: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.needs_restart)

    def describe(self) -> str:
        parts = []
        if self.added:
            parts.append(f"added {', '.join(self.added)}")
        if self.removed:
            parts.append(f"removed {', '.join(self.removed)}")
        for server_id, keys in self.changed.items():
            parts.append(f"changed {server_id} ({', '.join(keys)})")
        return "; ".join(parts) or "no server changed"


def _changed_keys(old: ServerConfig, new: ServerConfig) -> list[str]:
    return [name for name in type(old).model_fields if getattr(old, name) != getattr(new, name)]


def _section_changes(old: MasterConfig, new: MasterConfig) -> list[str]:
    keys = []
    for section in _RESTART_SECTIONS:
        before, after = getattr(old, section), getattr(new, section)
        keys += [
            f"{section}.{name}" for name in type(before).model_fields if getattr(before, name) != getattr(after, name)
        ]
    return keys


def diff_configs(old: MasterConfig, new: MasterConfig) -> ConfigDiff:
    before = {server.id: server for server in old.servers}
    after = {server.id: server for server in new.servers}
    changed = {sid: keys for sid in before.keys() & after.keys() if (keys := _changed_keys(before[sid], after[sid]))}
    return ConfigDiff(
        added=[sid for sid in after if sid not in before],
        removed=[sid for sid in before if sid not in after],
        changed=dict(sorted(changed.items())),
        needs_restart=_section_changes(old, new),
    )
