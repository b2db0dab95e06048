"""Runs the whole Pulumi program (__main__.py) under Pulumi mocks and records the resource graph it registers.

Config comes from the real Pulumi.yaml defaults merged with the real stack file, as the CLI merges them. Each
registration keeps what the engine would see: type, name, parent, inputs, dependencies, provider, options, and
which inputs travel as secrets.
"""

from __future__ import annotations

import json
import os
import re
import runpy
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi.runtime
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.settings import get_root_resource

from lab import artifacts, catalog, local_secrets
from lab.config import default_cluster_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "__main__.py")
PROJECT = "istio-ambient-lab"
STACKS = ("l4-only", "l7")

FAKE_BUNDLE = os.path.join(ROOT, "tests", "fixtures", "gateway-api-standard-install.yaml")
_CACHE: dict[str, str] = {}


def fake_chart_bytes(name: str, version: str) -> bytes:
    """A packaged Helm chart as a repository serves it (a .tgz holding <name>/Chart.yaml), with no templates: a
    provider that opens it finds a valid chart. Byte-for-byte the same on every call, so digests are stable."""
    import gzip
    import io
    import tarfile

    chart_yaml = f"apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: {version}\n".encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(f"{name}/Chart.yaml")
        info.size, info.mtime, info.mode = len(chart_yaml), 0, 0o644
        tar.addfile(info, io.BytesIO(chart_yaml))
    return gzip.compress(raw.getvalue(), mtime=0)


def fake_fetch(url: str) -> bytes:
    """What the chart repositories and the Gateway API release would answer, for lab.artifacts under mocks: an
    index.yaml listing every chart the lab uses at any version asked for (with its digest), the charts, the bundle."""
    import hashlib

    if url.endswith("/index.yaml"):
        names = {catalog.PROMETHEUS_CHART: [catalog.PROMETHEUS_CHART_VERSION], catalog.KIALI_CHART: [catalog.KIALI_VERSION],
                 **{chart.chart: [catalog.ISTIO_VERSION, "1.30.5"] for chart in catalog.ISTIO_CHARTS}}
        entries = {name: [{"version": version, "urls": [f"{name}-{version}.tgz"],
                           "digest": hashlib.sha256(fake_chart_bytes(name, version)).hexdigest()}
                          for version in versions] for name, versions in names.items()}
        return yaml.safe_dump({"apiVersion": "v1", "entries": entries}).encode()
    if url.endswith(".tgz"):
        name, _, version = url.rsplit("/", 1)[1].removesuffix(".tgz").rpartition("-")
        return fake_chart_bytes(name, version)
    if url.endswith("/standard-install.yaml"):
        return Path(FAKE_BUNDLE).read_bytes()
    raise AssertionError(f"the program fetched an address no fake answers: {url}")


def warm_cache(folder: str, observability: bool = True, fetch=fake_fetch) -> str:
    """Fill `folder` as lab.artifacts would after a lab's first fetch (through `fetch`, by default the stand-in
    repositories of fake_fetch): a warm cache."""
    previous, previous_env = artifacts._fetch, os.environ.get(artifacts.CACHE_ENV)
    artifacts._fetch = fetch
    os.environ[artifacts.CACHE_ENV] = folder
    try:
        artifacts.ensure(Path(ROOT), catalog.ISTIO_VERSION, catalog.ISTIO_CHART_REPOSITORY, observability,
                         catalog.GATEWAY_API_VERSION)
    finally:
        artifacts._fetch = previous
        if previous_env is None:
            os.environ.pop(artifacts.CACHE_ENV, None)
        else:
            os.environ[artifacts.CACHE_ENV] = previous_env
    return folder


def artifact_cache() -> str:
    """One cache for the test session: the first program run fills it through lab.artifacts (fake_fetch), later
    runs find it warm, as a user's second `up` does."""
    if "dir" not in _CACHE:
        import tempfile

        _CACHE["dir"] = tempfile.mkdtemp(prefix="lab-test-cache-")
    return _CACHE["dir"]


FAKE_OWNER_TOKEN = "0a1b2c3d"  # the token lab.kind_cluster's create would draw for the state

# What `kind get kubeconfig` would print: a key inside, so the tests can prove it never leaks.
FAKE_KUBECONFIG = (
    "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://127.0.0.1:40000\n  name: kind-x\n"
    "users:\n- name: kind-x\n  user:\n    client-key-data: RkFLRS1QUklWQVRFLUtFWQ==\n"
)


def _config_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def project_file() -> dict:
    with open(os.path.join(ROOT, "Pulumi.yaml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def stack_file(stack: str) -> dict:
    with open(os.path.join(ROOT, "stacks", f"Pulumi.{stack}.yaml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def merged_config(stack: str) -> dict[str, str]:
    """Project defaults overlaid by the stack's values, keys fully qualified, values as the CLI passes them."""
    merged: dict[str, str] = {}
    for key, spec in (project_file().get("config") or {}).items():
        full_key = key if ":" in key else f"{PROJECT}:{key}"
        if "value" in spec:
            merged[full_key] = _config_string(spec["value"])
        elif "default" in spec:
            merged[full_key] = _config_string(spec["default"])
    for key, value in ((stack_file(stack).get("config")) or {}).items():
        merged[key] = _config_string(value)
    return merged


@dataclass
class Registration:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    remote: bool
    inputs: dict
    secret_inputs: set[str]
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    provider: str
    deleted_with: str
    delete_before_replace: bool
    retain_on_delete: bool
    transforms: list  # the registration's resource transforms (the engine applies them to a component's children)
    custom_timeouts: dict
    additional_secret_outputs: list[str]
    order: int
    aliases: list = field(default_factory=list)  # (name, parent URN) of each alias spec the SDK sent


@dataclass
class Invocation:
    token: str
    args: dict
    order: int


@dataclass
class ProgramRun:
    stack: str
    resources: dict[str, Registration]
    invokes: list[Invocation]
    outputs: dict[str, Any]
    secret_outputs: set[str] = field(default_factory=set)
    registered_urns: list[str] = field(default_factory=list)
    commands_run: list[str] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources.values() if r.type == type_]

    def named(self, type_: str, name: str) -> Registration:
        found = [r for r in self.of_type(type_) if r.name == name]
        assert len(found) == 1, f"expected one {type_} named {name}, found {[r.urn for r in found]}"
        return found[0]

    def kubernetes(self) -> list[Registration]:
        """Every resource the Kubernetes provider manages (custom resources, not components or providers)."""
        return [r for r in self.resources.values() if r.type.startswith("kubernetes:") and r.type != "pulumi:providers:kubernetes"]

    def depends_on(self, resource: Registration, other: Registration) -> bool:
        return other.urn in resource.dependencies


def _unwrap_secrets(value: Any) -> Any:
    """Inputs as the provider would see them, with the SDK's secret envelopes opened."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return _unwrap_secrets(value["value"])
        return {k: _unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap_secrets(v) for v in value]
    return value


def _secret_keys(properties) -> set[str]:
    """Top-level input keys that the SDK sent wrapped as secrets."""
    secret = set()
    for key, value in properties.fields.items():
        if value.HasField("struct_value"):
            fields = value.struct_value.fields
            if fields.get(rpc._special_sig_key) and fields[rpc._special_sig_key].string_value == rpc._special_secret_sig:
                secret.add(key)
    return secret


def fake_verify_report(mode: str = "l4-only", passed: bool = True) -> dict:
    """What `python -m verify --json` prints, in its real shape, for the checks the outputs are built from."""
    from verify.checks import LOG_EVIDENCE_CHECK, certificate_check_name

    def result(name: str, evidence: dict, ok: bool = True) -> dict:
        return {"name": name, "passed": ok, "expected": "x", "observed": "y", "command": ["kubectl ..."],
                "evidence": evidence, "duration_s": 0.5, "details": None}

    entry = {"direction": "outbound", "src_identity": "spiffe://cluster.local/ns/default/sa/sleep"}
    results = [
        result(certificate_check_name("sleep"), {"certificate": {"san_uris": ["spiffe://cluster.local/ns/default/sa/sleep"]}}),
        result(certificate_check_name("productpage"),
               {"certificate": {"san_uris": ["spiffe://cluster.local/ns/default/sa/bookinfo-productpage"]}}),
        result(LOG_EVIDENCE_CHECK, {"client": {"node": "n1", "entry": entry},
                                    "server": {"node": "n2", "entry": {**entry, "direction": "inbound"}}}),
        result("traffic: notsleep GET /productpage", {}, ok=passed),
    ]
    summary = "4 of 4 checks passed" if passed else "3 of 4 checks passed; failed: traffic: notsleep GET /productpage"
    return {"mode": mode, "namespace": "default", "started_at": "2026-11-25T00:00:00+00:00", "passed": passed,
            "summary": summary, "results": results}


class LabMocks(pulumi.runtime.Mocks):
    """Answers as the real engine and providers do, including the rules that decide what runs in a preview.

    - pulumi-command's Create returns an ID even in preview (it runs nothing there); outputs that do not mirror an
      input (stdout, stderr) are unknown, as pulumi-go-provider's infer marks them (markComputed on create).
    - An invoke whose dependencies all have IDs runs, in a preview too: the engine gates on IDs, not on outputs.
    - The fake host's kind clusters are `clusters`: a brand-new stack starts with none, so a cluster-touching
      command run before the cluster Command really created the cluster fails as it would on a real host.
    - `existing_stack`: the stack was brought up before, so in a preview every resource answers with the known
      outputs it has in the state.
    """

    def __init__(self, verify_report: dict | None = None, failing_command: tuple[str, str] | None = None,
                 preview: bool = False, clusters: set[str] | None = None, existing_stack: bool = False):
        self.verify_report = verify_report or fake_verify_report()
        # (part of a command, its output): that command fails the way pulumi-command reports a non-zero exit.
        self.failing_command = failing_command
        self.preview = preview
        self.clusters = set(clusters or ())
        self.existing_stack = existing_stack
        self.commands_run: list[str] = []  # every shell command that really ran, resources' and invokes' alike

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ == "kubernetes:helm.sh/v3:Release":
            outputs["status"] = {"name": args.inputs.get("name"), "status": "deployed", "version": args.inputs.get("version")}
        if args.typ == "command:local:Command":
            if self.preview and not self.existing_stack:
                outputs.update(stdout=rpc.UNKNOWN, stderr=rpc.UNKNOWN)
            else:
                outputs.update(stdout=self._run_create(args.inputs.get("create", "")), stderr="")
        return f"{args.name}-id", outputs

    def _run_create(self, create: str) -> str:
        if self.preview:  # an existing stack's Command keeps its stored output and runs nothing
            return "done (from the state)"
        self.commands_run.append(create)
        match = re.search(r"lab\.kind_cluster create --name (\S+) --owner (\S+)", create)
        if match:
            self.clusters.add(match.group(1).strip("'"))
            return f"created kind cluster '{match.group(1)}' (owner {match.group(2)}.{FAKE_OWNER_TOKEN})."
        return "done"

    def call(self, args: pulumi.runtime.MockCallArgs):
        command = args.args.get("command", "")
        self.commands_run.append(command)
        if self.failing_command and self.failing_command[0] in command:
            # How the engine hands a failed invoke back to the SDK: a failure, which the SDK raises.
            return {}, [("command", f'exit status 1: running "{command}":\n{self.failing_command[1]}')]
        kubeconfig_read = re.search(r"lab\.kind_cluster kubeconfig --name (\S+)", command)
        if kubeconfig_read and kubeconfig_read.group(1).strip("'") not in self.clusters:
            name = kubeconfig_read.group(1).strip("'")
            return {}, [("command", f'exit status 1: running "{command}":\nerror: kind cluster \'{name}\' does not '
                                    "exist")]
        if args.token == "command:local:run" and " -m verify " in command:
            printed = self.verify_report if isinstance(self.verify_report, str) else json.dumps(self.verify_report)
            return {"stdout": printed, "stderr": "", "command": command}
        if args.token == "command:local:run":
            return {"stdout": FAKE_KUBECONFIG, "stderr": "", "command": command}
        return {}


class RecordedTransforms:
    """Stands in for the SDK's callback server: keeps each transform function under the token it hands out."""

    def __init__(self, functions: dict[str, Any]):
        self.functions = functions

    def register_transform(self, transform):
        from pulumi.runtime.proto import callback_pb2

        token = f"transform-{len(self.functions)}"
        self.functions[token] = transform
        return callback_pb2.Callback(target="mock", token=token)


class RecordingMonitor(MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.registrations: dict[str, Registration] = {}
        self.invocations: list[Invocation] = []
        self.registered_urns: list[str] = []  # every registration, so a duplicate URN cannot hide in the dict
        self.transform_functions: dict[str, Any] = {}
        self._order = 0

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self._order += 1
            self.registered_urns.append(response.urn)
            self.registrations[response.urn] = Registration(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                custom=request.custom,
                remote=request.remote,
                inputs=_unwrap_secrets(rpc.deserialize_properties(request.object)),
                secret_inputs=_secret_keys(request.object),
                dependencies=list(request.dependencies),
                property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                provider=request.provider,
                deleted_with=request.deletedWith,
                delete_before_replace=request.deleteBeforeReplace,
                retain_on_delete=request.retainOnDelete,
                transforms=[self.transform_functions[callback.token] for callback in request.transforms],
                aliases=[(alias.spec.name, alias.spec.parentUrn) for alias in request.aliases],
                custom_timeouts={
                    "create": request.customTimeouts.create,
                    "update": request.customTimeouts.update,
                    "delete": request.customTimeouts.delete,
                },
                additional_secret_outputs=list(request.additionalSecretOutputs),
                order=self._order,
            )
        return response

    def Invoke(self, request):
        self._order += 1
        self.invocations.append(Invocation(request.tok, rpc.deserialize_properties(request.args), self._order))
        return super().Invoke(request)


def run_program(
    stack: str, overrides: dict[str, str] | None = None, preview: bool = False, verify_report: dict | None = None,
    failing_command: tuple[str, str] | None = None, existing_stack: bool | None = None,
) -> ProgramRun:
    """Evaluates __main__.py for one stack under mocks and returns what it registered and exported.

    A preview models an existing stack (its cluster up, its outputs known) unless `existing_stack` is False: the
    first preview of a brand-new stack. An update starts from a host with no cluster and creates it.
    """
    config = merged_config(stack)
    for key, value in (overrides or {}).items():
        config[f"{PROJECT}:{key}"] = value
    existing = preview if existing_stack is None else existing_stack
    cluster_name = config.get(f"{PROJECT}:clusterName", "") or default_cluster_name(stack)
    mocks = LabMocks(verify_report or fake_verify_report(stack), failing_command, preview=preview,
                     clusters={cluster_name} if existing else set(), existing_stack=existing)
    monitor = RecordingMonitor(mocks)
    os.environ[artifacts.CACHE_ENV] = artifact_cache()
    os.environ[local_secrets.SECRETS_ENV] = os.path.join(artifact_cache(), "secrets")  # never the checkout's .lab/
    artifacts._fetch = fake_fetch  # no network under mocks: the repositories' answers, faked
    pulumi.runtime.reset_options(project=PROJECT, stack=stack, preview=preview)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    # The engine calls a resource's transforms back through a callback server that mocks lack: a stand-in records
    # each one, so the tests can see it registered and call it as the engine would on the component's children.
    pulumi.runtime.settings.SETTINGS.callbacks = RecordedTransforms(monitor.transform_functions)
    pulumi.runtime.set_all_config(config)
    outputs: dict[str, Any] = {}
    secret_outputs: set[str] = set()

    @pulumi.runtime.test
    def evaluate():
        runpy.run_path(MAIN, run_name="__main__")
        exported = dict(get_root_resource().outputs)

        def collect(name: str, value: Any):
            outputs[name] = value

        async def is_secret(name: str, value: Any):
            if isinstance(value, pulumi.Output) and await value.is_secret():
                secret_outputs.add(name)

        for name, value in exported.items():
            pulumi.Output.from_input(value).apply(lambda v, n=name: collect(n, v))
            pulumi.Output.from_input(is_secret(name, value))
        return pulumi.Output.all(*exported.values())

    evaluate()
    return ProgramRun(stack, monitor.registrations, monitor.invocations, outputs, secret_outputs,
                      monitor.registered_urns, mocks.commands_run)
