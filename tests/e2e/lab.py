"""One stack of a throwaway copy of the project, driven through the Pulumi Automation API.

Shared by the end-to-end suite (tests/e2e, real kind clusters) and the engine tier (tests/engine, the real CLI with
faked Docker, kind and kubectl), so the Automation API calls the end-to-end suite makes are run for real wherever a
Pulumi CLI is, not only where Docker is.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

from pulumi import automation as auto

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROJECT = "istio-ambient-lab"
COPIED = ["Pulumi.yaml", "__main__.py", "requirements.txt", "components", "lab", "verify", "stacks"]
E2E_PORTS = {"l4-only": "18080", "l7": "18081"}


class Lab:
    """One stack of a throwaway copy of the project.

    The stack gets a name of its own (`e2e-<mode>-<random>`, its config copied from the mode's stack file), so a
    run never meets the user's stacks, their stack files' salts or their clusters.
    """

    def __init__(self, stack: str, cluster: str, work: str):
        self.mode = stack
        self.stack_name = f"e2e-{stack}-{secrets.token_hex(3)}"
        shutil.copy2(os.path.join(work, "stacks", f"Pulumi.{stack}.yaml"),
                     os.path.join(work, "stacks", f"Pulumi.{self.stack_name}.yaml"))
        self.cluster = cluster
        self.work = work
        self.passphrase = secrets.token_urlsafe(24)
        state = os.path.join(work, "state")
        self.env_vars = {"PULUMI_BACKEND_URL": f"file://{state}", "PULUMI_CONFIG_PASSPHRASE": self.passphrase,
                         "PULUMI_SKIP_UPDATE_CHECK": "true"}
        os.makedirs(state, exist_ok=True)
        self.printed: list[str] = []
        self.stack = auto.create_or_select_stack(
            stack_name=self.stack_name,
            work_dir=work,
            opts=auto.LocalWorkspaceOptions(
                work_dir=work,
                env_vars=self.env_vars,
                secrets_provider="passphrase",
            ),
        )
        self.stack.set_config(f"{PROJECT}:clusterName", auto.ConfigValue(cluster))
        self.stack.set_config(f"{PROJECT}:ingressHostPort", auto.ConfigValue(E2E_PORTS[stack]))

    def _print(self, line: str) -> None:
        self.printed.append(line)

    def up(self, **kwargs):
        return self.stack.up(on_output=self._print, color="never", show_secrets=False, **kwargs)

    def preview(self, **kwargs):
        return self.stack.preview(on_output=self._print, color="never", **kwargs)

    def refresh(self, **kwargs):
        return self.stack.refresh(on_output=self._print, color="never", show_secrets=False, **kwargs)

    def destroy(self, **kwargs):
        return self.stack.destroy(on_output=self._print, color="never", show_secrets=False, **kwargs)

    def set(self, key: str, value: str) -> None:
        self.stack.set_config(f"{PROJECT}:{key}", auto.ConfigValue(value))

    def outputs(self) -> dict:
        return {name: value.value for name, value in self.stack.outputs().items()}

    def state_as_stored(self) -> str:
        """The stack's state as it lies in the backend, secrets still encrypted.

        Not `stack.export_stack()`: the Automation API exports with `--show-secrets`, so its text holds every
        secret decrypted (found by the engine tier), and a leak check on it can only fail.
        """
        result = subprocess.run(["pulumi", "stack", "export", "--stack", self.stack_name], cwd=self.work,
                                env={**os.environ, **self.env_vars}, capture_output=True, text=True, check=True)
        return result.stdout
