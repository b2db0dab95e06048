"""Reads the stack's configuration from Pulumi and validates it with lab.config, before any resource exists."""

from __future__ import annotations

import pulumi
import pulumi.runtime.config

from lab import config as lab_config


def read_lab_config() -> lab_config.LabConfig:
    """The validated configuration; a bad value stops the program with its one-sentence message, no traceback."""
    prefix = f"{lab_config.PROJECT}:"
    raw = {
        key[len(prefix):]: value
        for key, value in pulumi.runtime.config.CONFIG.get().items()
        if key.startswith(prefix)
    }
    try:
        return lab_config.load(raw, pulumi.get_stack())
    except lab_config.ConfigError as error:
        raise pulumi.RunError(str(error)) from None
