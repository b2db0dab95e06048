"""Which cluster a context reaches: its ``kube-system`` namespace UID and its API server URL.

A context is only a name: after ``export KUBECONFIG=prod.yaml`` a context called ``minikube`` or k3s' ``default``
reaches another cluster. The program records the identity of an existing cluster at the stack's first up (a
Command whose stored output is the record, in the stack's state, which no shell variable can change); ``./lab.sh``
measures it again before every ``up`` and ``destroy`` and refuses when the cluster is another one. The UID decides:
the namespace is created with the cluster and never replaced, while the same cluster may move to a new address.

The Command runs again whenever its inputs change (another kubeconfig file or context name): pulumi-command's update
runs the create command once more and stores what it prints. So that no such run (``./lab.sh pulumi up`` skips the
preflight) can overwrite the record with another cluster's, a run that is handed the stored record
(PULUMI_COMMAND_STDOUT, which pulumi-command sets on update) prints that record unchanged when the cluster is the same
one, and fails with a sentence when it is not.

Plain Python, no Pulumi import. ``python -m lab.cluster_identity --context NAME`` prints the record as JSON (what the
program's Command runs; KUBECONFIG in its environment names the files).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lab.bootstrap import Runner, run_captured
from lab.catalog import LAB_SCRIPT

UID = "kubeSystemUid"
PREVIOUS_RECORD_ENV = "PULUMI_COMMAND_STDOUT"  # pulumi-command hands a Command's stored stdout to its update
SERVER = "server"


class IdentityError(RuntimeError):
    """The cluster could not be asked; the message says why, in kubectl's words."""


@dataclass(frozen=True)
class Identity:
    uid: str
    server: str

    def as_record(self) -> dict[str, str]:
        return {UID: self.uid, SERVER: self.server}

    def describe(self) -> str:
        return f"kube-system UID {self.uid}, server {self.server or 'unknown'}"


def from_record(record: object) -> Identity | None:
    """The identity a stored record holds (the Command's JSON stdout, or its parsed form); None when it holds none."""
    if isinstance(record, str):
        try:
            record = json.loads(record)
        except ValueError:
            return None
    if not isinstance(record, Mapping) or not isinstance(record.get(UID), str) or not record.get(UID):
        return None
    return Identity(uid=str(record[UID]), server=str(record.get(SERVER) or ""))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def read(run: Runner, env: Mapping[str, str], context: str, kubeconfig: str | None = None) -> Identity:
    """Ask the cluster behind ``context`` who it is.

    Args:
        run: The process runner (kubectl must be on env's PATH).
        env: The environment kubectl runs in; its KUBECONFIG names the files unless ``kubeconfig`` does.
        context: The kubeconfig context.
        kubeconfig: One kubeconfig file, or None for env's KUBECONFIG (or ~/.kube/config).

    Raises:
        IdentityError: kubectl could not read the namespace (the cluster does not answer, or refuses).
    """
    base = ["kubectl", *(["--kubeconfig", kubeconfig] if kubeconfig else []), "--context", context]
    uid = run([*base, "get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}", "--request-timeout", "15s"],
              env=dict(env), timeout=30)
    if uid.returncode != 0 or not uid.stdout.strip():
        raise IdentityError(_last_line(uid.stderr) if uid.returncode != 0 else "kube-system has no UID")
    server = run([*base, "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"],
                 env=dict(env), timeout=30)
    return Identity(uid=uid.stdout.strip(), server=server.stdout.strip() if server.returncode == 0 else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.cluster_identity", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("--context", required=True)
    args = parser.parse_args(argv)
    try:
        identity = read(run_captured, os.environ, args.context)
    except IdentityError as error:
        print(f"The cluster of context {args.context} could not be identified ({error}): check that it answers "
              f"with `kubectl --context {args.context} get namespace kube-system`, then run up again.",
              file=sys.stderr)
        return 1
    recorded = from_record(os.environ.get(PREVIOUS_RECORD_ENV))
    if recorded is not None and recorded.uid != identity.uid:
        print(f"Context {args.context} now reaches another cluster ({identity.describe()}) than the one this stack "
              f"was brought up on ({recorded.describe()}): point the stack's kubeContext and kubeconfig (or your "
              f"KUBECONFIG) back at that cluster, or run `{LAB_SCRIPT} destroy` for this stack before bringing it up "
              f"elsewhere.", file=sys.stderr)
        return 1
    print(json.dumps((recorded or identity).as_record(), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
