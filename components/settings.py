"""Reads the stack's configuration from Pulumi and validates it with lab.config, before any resource exists."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi.runtime.config

from components.kube import PROJECT_ROOT
from lab import artifacts
from lab import config as lab_config


def fetch_artifacts(cfg: lab_config.LabConfig) -> None:
    """Fetch (or find in the cache) and verify what the lab installs; a failure stops the program in one sentence."""
    try:
        artifacts.ensure(Path(PROJECT_ROOT), cfg.istio_version, cfg.chart_repository, cfg.observability,
                         cfg.gateway_api_version if cfg.install_gateway_api_crds else None)
    except artifacts.ArtifactError as error:
        raise pulumi.RunError(str(error)) from None


def read_lab_config() -> lab_config.LabConfig:
    """The validated configuration; a bad value stops the program with its one-sentence message, no traceback."""
    prefix = f"{lab_config.PROJECT}:"
    # The CLI's language host hands config over in the PULUMI_CONFIG environment variable; mocks and the Automation
    # API's inline programs set it in the runtime. Both, so that no source of config is silently ignored.
    everything = {**pulumi.runtime.config.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    raw = {key[len(prefix):]: value for key, value in everything.items() if key.startswith(prefix)}
    try:
        return lab_config.load(raw, pulumi.get_stack())
    except lab_config.ConfigError as error:
        raise pulumi.RunError(str(error)) from None
