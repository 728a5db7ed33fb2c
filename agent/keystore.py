"""The ``keystore`` config section and the agent's access to the data-key store.

Keys in the section::

    keystore:
      path: /var/lib/lethe/keys/data-keys.store   # default: <state_dir>/keys/data-keys.store
      kek_file: /etc/lethe/kek                    # 32 random bytes, 64 hex digits or base64
      kek_env: LETHE_KEK                          # or: name of a variable holding the KEK
      backend: local                # local, aws-kms, gcp-kms or azure-keyvault
      aws_kms:                                    # only for backend aws-kms
        region: eu-west-1
        endpoint_url: null
        pending_window_days: 7
      gcp_kms:                                    # only for backend gcp-kms
        key_ring: projects/P/locations/L/keyRings/R
        endpoint: null                            # default: the SDK's endpoint
        destroy_scheduled_days: 7                 # 1 to 120
        protection_level: SOFTWARE                # or HSM
      azure_keyvault:                             # only for backend azure-keyvault
        vault_url: https://VAULT.vault.azure.net
        key_size: 2048                            # or 3072
        hardware_protected: false                 # true: RSA-HSM keys

``kek_file`` wins over ``kek_env``; without either, ``LETHE_KEK`` is used when
it is set. ``key://`` targets get these settings as their options, so
``lethe purge key://SUBJECT`` destroys keys in the same store ``lethe seal``
writes to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent import config as config_module
from agent.config import Config, Node
from plugins.base import Target
from plugins.keys import KeyStore

DEFAULT_STORE = "keys/data-keys.store"
DEFAULT_KEK_ENV = "LETHE_KEK"
BACKENDS = ("local", "aws-kms", "gcp-kms", "azure-keyvault")


def validate(node: Node) -> dict[str, Any]:
    """Validate the ``keystore`` section into plain settings."""
    if node.value is None:
        return {}
    node.mapping(
        {
            "path",
            "kek_file",
            "kek_env",
            "backend",
            "aws_kms",
            "gcp_kms",
            "azure_keyvault",
        }
    )
    settings: dict[str, Any] = {}
    for key in ("path", "kek_file", "kek_env"):
        value = node.string(key)
        if value is not None:
            settings[key] = value
    backend = node.string("backend", default="local")
    if backend not in BACKENDS:
        raise node.child("backend").error(f"one of {', '.join(BACKENDS)}")
    settings["backend"] = backend
    kms = node.child("aws_kms")
    if kms.is_present():
        kms.mapping({"region", "endpoint_url", "pending_window_days"})
        window = kms.integer("pending_window_days", default=7, minimum=7)
        if window > 30:
            raise kms.child("pending_window_days").error(
                "a number of days from 7 to 30"
            )
        settings["aws_kms"] = {
            "region": kms.string("region"),
            "endpoint_url": kms.string("endpoint_url"),
            "pending_window_days": window,
        }
    gcp = node.child("gcp_kms")
    if gcp.is_present():
        gcp.mapping(
            {"key_ring", "endpoint", "destroy_scheduled_days", "protection_level"}
        )
        settings["gcp_kms"] = {
            "key_ring": gcp.string("key_ring", required=True),
            "endpoint": gcp.string("endpoint"),
            "destroy_scheduled_days": gcp.integer(
                "destroy_scheduled_days", default=7, minimum=1, maximum=120
            ),
            "protection_level": gcp.string("protection_level", default="SOFTWARE"),
        }
    vault = node.child("azure_keyvault")
    if vault.is_present():
        vault.mapping({"vault_url", "key_size", "hardware_protected"})
        settings["azure_keyvault"] = {
            "vault_url": vault.string("vault_url", required=True),
            "key_size": vault.integer(
                "key_size", default=2048, minimum=2048, maximum=3072
            ),
            "hardware_protected": vault.boolean("hardware_protected", default=False),
        }
    return settings


config_module.register_section("keystore", validate)


def settings(config: Config, state_dir: Path) -> dict[str, Any]:
    """Return the store settings with defaults filled in."""
    section: Mapping[str, Any] = config.sections.get("keystore") or {}
    resolved = dict(section)
    resolved.setdefault("path", str(state_dir / DEFAULT_STORE))
    if "kek_file" not in resolved and "kek_env" not in resolved:
        resolved["kek_env"] = DEFAULT_KEK_ENV
    return resolved


def open_store(config: Config, state_dir: Path) -> KeyStore:
    """Open the configured store; its directory is created with mode 0700."""
    options = settings(config, state_dir)
    Path(options["path"]).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return KeyStore.from_options(options)


def with_store_options(target: Target, config: Config, state_dir: Path) -> Target:
    """Give a ``key://`` target the store settings it does not set itself."""
    merged = {**settings(config, state_dir), **target.options}
    return Target(target.url, merged)


def kek_hint() -> str:
    return (
        f"create one with 'head -c 32 /dev/urandom > /etc/lethe/kek; chmod 600 /etc/lethe/kek' "
        f"and set keystore.kek_file, or export {DEFAULT_KEK_ENV}=$(openssl rand -hex 32)"
    )


def is_configured(config: Config) -> bool:
    section = config.sections.get("keystore") or {}
    return bool(
        section.get("kek_file")
        or section.get("kek_env")
        or os.environ.get(DEFAULT_KEK_ENV)
    )
