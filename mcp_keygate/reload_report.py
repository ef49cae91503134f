"""What a config reload changed, said in one log line and used to tell MCP clients which lists
(tools, prompts, resources) changed."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import Config
from .keys.secret import ApiKey


@dataclass(frozen=True)
class ReloadReport:
    added_keys: list[str] = field(default_factory=list)
    removed_keys: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # added, removed or changed
    routes: list[str] = field(default_factory=list)
    presets: list[str] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    limits_changed: bool = False
    restart_needed: list[str] = field(default_factory=list)  # sections kept as they were

    @classmethod
    def between(
        cls,
        old: Config,
        old_keys: dict[str, list[ApiKey]],
        new: Config,
        new_keys: dict[str, list[ApiKey]],
        restart_needed: list[str],
    ) -> ReloadReport:
        before = {k.key_id for ks in old_keys.values() for k in ks}
        after = {k.key_id for ks in new_keys.values() for k in ks}
        return cls(
            added_keys=sorted(after - before),
            removed_keys=sorted(before - after),
            models=_changed(old.models, new.models),
            routes=_changed(old.routes, new.routes),
            presets=_changed(old.presets, new.presets),
            policies=_changed(old.policies, new.policies),
            limits_changed=old.limits != new.limits,
            restart_needed=restart_needed,
        )

    @property
    def tools_changed(self) -> bool:
        """Preset tools are the only tools that come and go (policies hide some per caller)."""
        return bool(self.presets or self.policies)

    @property
    def prompts_changed(self) -> bool:
        """Each preset is also a prompt. (The resources are a fixed set; only their contents change.)"""
        return bool(self.presets or self.policies)

    def summary(self) -> str:
        parts = []
        if self.added_keys or self.removed_keys:
            parts.append(f"keys +{len(self.added_keys)} -{len(self.removed_keys)}")
        for name in ("models", "routes", "presets", "policies"):
            changed: list[str] = getattr(self, name)
            if changed:
                parts.append(f"{name} changed: {', '.join(changed)}")
        if self.limits_changed:
            parts.append("limits changed")
        text = "; ".join(parts) or "nothing changed"
        if self.restart_needed:
            text += f" ([{'], ['.join(self.restart_needed)}] changed too: those apply at the next restart)"
        return text


def _changed(old: dict, new: dict) -> list[str]:
    return sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
