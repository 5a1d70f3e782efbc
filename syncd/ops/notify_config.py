"""The ``notify:`` section of the config: webhooks for events, and a heartbeat URL.

    notify:
      webhooks:
        - url: https://hooks.example.com/syncd
          secret: ${SYNCD_WEBHOOK_SECRET}   # optional: signs each body (X-Syncd-Signature-256)
          events: [sync.failed, bundle.published]   # optional: default every event
        - https://other.example.com/hook    # a bare URL: every event, unsigned
      heartbeat:
        url: https://hc-ping.com/<uuid>
        interval: 60                        # seconds
      min_interval: 10                      # syncd run: at most one sync.completed per this many seconds
      timeout: 10                           # seconds per request
      attempts: 5                           # tries per delivery in all

A leaf of the import graph (like ``syncd.bundles.config``): it reads and checks values only.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from syncd.errors import ConfigError
from syncd.values import check_keys, seconds, whole_number

# The events a webhook can receive (``syncd.ops.events`` also has ``health``, which is internal).
WEBHOOK_EVENTS = ("sync.completed", "sync.failed", "bundle.published", "bundle.failed", "target.audit_mismatch")
_KEYS = ("webhooks", "heartbeat", "min_interval", "timeout", "attempts")
_WEBHOOK_KEYS = ("url", "secret", "events")
_HEARTBEAT_KEYS = ("url", "interval")


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str | None = field(default=None, repr=False)  # never logged
    events: tuple[str, ...] = WEBHOOK_EVENTS

    def wants(self, event: str) -> bool:
        return event in self.events


@dataclass(frozen=True)
class Heartbeat:
    url: str
    interval: float = 60.0


@dataclass(frozen=True)
class NotifyConfig:
    webhooks: tuple[Webhook, ...] = ()
    heartbeat: Heartbeat | None = None
    min_interval: float = 10.0
    timeout: float = 10.0
    attempts: int = 5


def parse_notify_config(raw: Any, where: str = "notify") -> NotifyConfig | None:
    """Validate the ``notify:`` value; None when nothing is configured. Raises ``ConfigError``."""
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping with webhooks: and/or heartbeat: (see config.example.yaml)")
    check_keys(raw, _KEYS, where)
    hooks = raw.get("webhooks") or []
    if not isinstance(hooks, list):
        hooks = [hooks]
    webhooks = tuple(_webhook(h, f"{where}.webhooks[{i}]") for i, h in enumerate(hooks))
    heartbeat = None
    if raw.get("heartbeat") is not None:
        hb = raw["heartbeat"]
        hb = {"url": hb} if isinstance(hb, str) else hb
        if not isinstance(hb, dict):
            raise ConfigError(f"{where}.heartbeat: must be a URL or a mapping with url: and interval:, got {hb!r}")
        check_keys(hb, _HEARTBEAT_KEYS, f"{where}.heartbeat")
        heartbeat = Heartbeat(_url(hb.get("url"), f"{where}.heartbeat.url"),
                              seconds(hb.get("interval", 60), f"{where}.heartbeat.interval", 1, 86400))
    if not webhooks and heartbeat is None:
        return None
    return NotifyConfig(webhooks, heartbeat,
                        min_interval=seconds(raw.get("min_interval", 10), f"{where}.min_interval", 0, 86400),
                        timeout=seconds(raw.get("timeout", 10), f"{where}.timeout", 0.5, 300),
                        attempts=whole_number(raw.get("attempts", 5), f"{where}.attempts", 1, 20))


def _webhook(raw: Any, where: str) -> Webhook:
    if isinstance(raw, str):
        return Webhook(_url(raw, where))
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a URL or a mapping with url:, secret:, events:, got {raw!r}")
    check_keys(raw, _WEBHOOK_KEYS, where)
    secret = raw.get("secret")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ConfigError(f"{where}.secret: must be a non-empty string (e.g. ${{SYNCD_WEBHOOK_SECRET}})")
    events = raw.get("events")
    if events is None:
        chosen = WEBHOOK_EVENTS
    else:
        items = events if isinstance(events, list) else [events]
        for name in items:
            if name not in WEBHOOK_EVENTS:
                close = difflib.get_close_matches(str(name), WEBHOOK_EVENTS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known events: {', '.join(WEBHOOK_EVENTS)}"
                raise ConfigError(f"{where}.events: unknown event {name!r}; {hint}")
        chosen = tuple(items)
    return Webhook(_url(raw.get("url"), f"{where}.url"), secret, chosen)


def _url(value: Any, where: str) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise ConfigError(f"{where}: must be an http:// or https:// URL, got {value!r}")
    return value
