"""``./lab.sh tour <stack>``: the seed tutorial's steps, in its order, with the commands of today's Istio.

The tutorial (Istio 1.18.0-alpha) read certificates with ``istioctl pc secret`` on a ztunnel Envoy, grepped
istio-cni's logs for routes, and guessed which ztunnel served which node. Today's ztunnel is not Envoy: istioctl reads
it with ``ztunnel-config``, a workload's node says which ztunnel serves it, and waypoints have their own ``istioctl
waypoint`` commands. Each step prints its command as the user would type it (``./lab.sh kubectl <stack> ...``), runs
it live against the stack's cluster, and says in one line what to look for. Steps of one mode say so in the other.

Commands that need a name only the cluster knows (the node sleep runs on, the ztunnel pod there) hold a placeholder,
filled in by asking kubectl just before the step runs, so the printed command is the one that ran.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from lab import catalog
from lab import config as lab_config
from lab.access import command_text
from lab.bootstrap import LabError, Runner, last_line
from lab.preflight import LAB_SCRIPT

CURL_STATUS = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}\\n"]
PRODUCTPAGE_URL = f"http://{catalog.PRODUCTPAGE}:{catalog.BOOKINFO_PORT}/productpage"
# The names a step's arguments may hold in braces; only these, so curl's %{http_code} stays as it is.
PLACEHOLDERS = ("stack", "sleep_node", "productpage_node", "ztunnel_on_sleep_node", "ztunnel_on_productpage_node")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


@dataclass(frozen=True)
class Step:
    """One step of the tutorial, as the lab runs it on one stack."""

    section: str  # the seed tutorial's section and step it stands for
    title: str
    tool: str  # kubectl, istioctl, or lab (printed for the user to run, never run by the tour)
    args: tuple[str, ...]
    look_for: str
    only_in: str | None = None  # the one mode the step applies to, None for both
    needs_addons: bool = False  # only with the observability addons (Kiali)
    expect_exit: tuple[int, ...] = (0,)  # the exit codes that mean the step answered as the tutorial expects

    def skip_reason(self, stack: str, config: lab_config.LabConfig) -> str | None:
        """Why this step does not run on this stack, as a sentence with the way to see it; None when it runs."""
        if self.only_in is not None and self.only_in != config.mesh_mode:
            other = f"{lab_config.PROJECT}:meshMode"
            return (f"Only in {self.only_in}: this stack is {config.mesh_mode}. See it with `{LAB_SCRIPT} tour "
                    f"{self.only_in}`, or switch this stack with `{LAB_SCRIPT} pulumi config set {other} "
                    f"{self.only_in} --stack {stack}` and `{LAB_SCRIPT} up {stack}`.")
        if self.needs_addons and not config.observability:
            key = f"{lab_config.PROJECT}:observability"
            return (f"Only with the addons: this stack has {key} false. Turn them on with `{LAB_SCRIPT} pulumi config "
                    f"set {key} true --stack {stack}` and `{LAB_SCRIPT} up {stack}`.")
        return None

    def command(self, stack: str, values: Mapping[str, str] | None = None) -> str:
        """The command as the user types it; placeholders filled from ``values`` or shown as <what they are>."""
        args = [fill(arg, values) for arg in self.args]
        if self.tool == "lab":
            return shlex.join([LAB_SCRIPT, *args])
        return command_text(stack, self.tool, args)


def fill(arg: str, values: Mapping[str, str] | None) -> str:
    def value(match: re.Match[str]) -> str:
        name = match[1]
        return values[name] if values is not None else f"<{name.replace('_', ' ')}>"

    return _PLACEHOLDER.sub(value, arg)


def steps(config: lab_config.LabConfig) -> list[Step]:
    """Every step of the tour for a stack's configuration, in the tutorial's order."""
    ns, l7 = config.apps_namespace, config.mesh_mode == "l7"
    sleep_sa = catalog.spiffe_id(ns, catalog.SLEEP)
    exec_sleep = ("-n", ns, "exec", f"deploy/{catalog.SLEEP}", "--")
    exec_notsleep = ("-n", ns, "exec", f"deploy/{catalog.NOTSLEEP}", "--")
    ztunnel_logs = ("-n", catalog.ISTIO_NAMESPACE, "logs")
    return [
        Step("Installation, steps 1-2", "Istio in ambient mode", "istioctl", ("version",),
             f"client version and control plane version both {config.istio_version}: the lab installed Istio with "
             "Helm (base, istiod, istio-cni, ztunnel), not with `istioctl install`"),
        Step("Installation, step 3", "Istio's resources", "kubectl", ("-n", catalog.ISTIO_NAMESPACE, "get", "all"),
             "DaemonSets ztunnel and istio-cni-node with one pod per node, and istiod; no ingress gateway here: the "
             f"lab's {catalog.INGRESS_GATEWAY_WORKLOAD} runs in {ns}"),
        Step("Installation, step 3", "One ztunnel per node", "kubectl",
             ("-n", catalog.ISTIO_NAMESPACE, "get", "pods", "-l", catalog.ZTUNNEL_POD_LABEL, "-o", "wide"),
             "one ztunnel pod on every node (NODE column): ztunnel, not istio-cni, is today's node proxy"),
        Step("Deploying the demo apps, step 1", "The demo apps", "kubectl", ("-n", ns, "get", "pods", "-o", "wide"),
             "bookinfo, sleep and notsleep Running with READY 1/1: one container each, no sidecar"
             + (f", and the waypoint {catalog.WAYPOINT_NAME}" if l7 else "")),
        Step("Deploying the demo apps, step 2", "The apps in ambient mode", "kubectl",
             ("get", "namespace", ns, "-L", catalog.AMBIENT_LABEL),
             f"DATAPLANE-MODE {catalog.AMBIENT_LABEL_VALUE}: the label the tutorial sets by hand, set by the lab"),
        Step("Deploying the demo apps, step 3", "Which ztunnel serves which pod", "istioctl",
             ("ztunnel-config", "workloads", "--workload-namespace", ns),
             "every app pod with PROTOCOL HBONE (captured by ztunnel) and its NODE: the ztunnel on that node serves "
             "it (this replaces grepping istio-cni's logs for routes)"),
        Step("mTLS certificate", "sleep's certificate, from the ztunnel on its node", "istioctl",
             ("ztunnel-config", "certificates", "--node", "{sleep_node}"),
             f"a Leaf certificate for {sleep_sa} with VALID CERT true, and the root CA it chains to"),
        Step("L4 processing, step 1", "sleep calls productpage", "kubectl",
             (*exec_sleep, *CURL_STATUS, PRODUCTPAGE_URL),
             "200" + (" (through the waypoint)" if l7 else " (ztunnel to ztunnel over mTLS)")),
        Step("L4 processing, step 2", "The ztunnel on sleep's node", "kubectl",
             (*ztunnel_logs, "{ztunnel_on_sleep_node}", "--since", "60s"),
             f'an access line with src.identity="{sleep_sa}" going out to '
             + (f"the waypoint (dst.workload {catalog.WAYPOINT_NAME})" if l7 else "productpage (dst.service)")),
        Step("L4 processing, step 2", "The ztunnel on productpage's node", "kubectl",
             (*ztunnel_logs, "{ztunnel_on_productpage_node}", "--since", "60s"),
             "an inbound access line for productpage from "
             + (f"the waypoint's identity (sa/{catalog.WAYPOINT_NAME})" if l7 else f"sleep's identity ({sleep_sa})")),
        Step("L4 processing (the L4 policy)", "notsleep is refused", "kubectl",
             (*exec_notsleep, *CURL_STATUS, PRODUCTPAGE_URL),
             ("403 and RBAC: access denied from the waypoint's L7 policy" if l7 else
              "command terminated with exit code 56 or 52: ztunnel closed the connection (curl reads a reset as 56, "
              "an empty reply as 52), the L4 policy allows only sleep"),
             expect_exit=(0,) if l7 else (56, 52)),
        Step("L7 processing, step 1", "The waypoint", "istioctl", ("waypoint", "list", "-n", ns),
             f"{catalog.WAYPOINT_NAME} with TRAFFIC TYPE service and PROGRAMMED True", only_in="l7"),
        Step("L7 processing, step 2", "The waypoint is ready", "istioctl", ("waypoint", "status", "-n", ns),
             f"{catalog.WAYPOINT_NAME} with STATUS True and TYPE Programmed", only_in="l7"),
        Step("L7 processing, step 3", "An HTTP method the L7 policy refuses", "kubectl",
             (*exec_sleep, *CURL_STATUS, "-X", "DELETE", PRODUCTPAGE_URL),
             "403: the waypoint reads the method, and the L7 policy allows sleep GET only", only_in="l7"),
        Step("L7 processing, step 4", "The ztunnel on sleep's node sends to the waypoint", "kubectl",
             (*ztunnel_logs, "{ztunnel_on_sleep_node}", "--since", "60s"),
             f"dst.workload {catalog.WAYPOINT_NAME}: the request went to the waypoint first", only_in="l7"),
        Step("Kiali dashboard, step 1", "Kiali is installed", "kubectl",
             ("-n", catalog.ISTIO_NAMESPACE, "rollout", "status", f"deployment/{catalog.KIALI_SERVICE}",
              "--timeout", "60s"),
             "successfully rolled out: Kiali, installed by the lab with Prometheus (the tutorial applies "
             "samples/addons)",
             needs_addons=True),
        Step("Kiali dashboard, steps 2-4", "Open the graph (run it yourself: it stays until Ctrl-C)", "lab",
             ("dashboard", "{stack}"),
             f"http://127.0.0.1:{catalog.KIALI_PORT}{catalog.KIALI_WEB_ROOT}: Traffic Graph, namespace {ns}; the "
             "sleep -> productpage edge is " + ("HTTP, through the waypoint" if l7 else "TCP (ztunnel sees bytes)"),
             needs_addons=True),
    ]


# --- Filling placeholders ------------------------------------------------------------------------------------------


def _resolvers(namespace: str) -> dict[str, Sequence[str]]:
    """kubectl arguments whose output is each placeholder's value; {x_node} values feed the ztunnel look-ups."""
    def node_of(app: str) -> list[str]:
        return ["-n", namespace, "get", "pod", "-l", f"app={app}", "-o", "jsonpath={.items[0].spec.nodeName}"]

    def ztunnel_on(node: str) -> list[str]:
        return ["-n", catalog.ISTIO_NAMESPACE, "get", "pod", "-l", catalog.ZTUNNEL_POD_LABEL, "--field-selector",
                f"spec.nodeName={{{node}}}", "-o", "jsonpath={.items[0].metadata.name}"]

    return {
        "sleep_node": node_of(catalog.SLEEP),
        "productpage_node": node_of(catalog.PRODUCTPAGE),
        "ztunnel_on_sleep_node": ztunnel_on("sleep_node"),
        "ztunnel_on_productpage_node": ztunnel_on("productpage_node"),
    }


def resolve(names: Sequence[str], namespace: str, kubectl: Callable[[Sequence[str]], str],
            values: dict[str, str]) -> None:
    """Fill ``values`` with each placeholder named (and the ones it needs), asking ``kubectl`` for them."""
    lookups = _resolvers(namespace)
    for name in names:
        if name in values:
            continue
        needed = [inner for arg in lookups[name] for inner in _PLACEHOLDER.findall(arg)]
        resolve(needed, namespace, kubectl, values)
        values[name] = kubectl([fill(arg, values) for arg in lookups[name]])


# --- Running -------------------------------------------------------------------------------------------------------


@dataclass
class Tour:
    """The tour of one stack, with the machine boundary passed in (tests replace it)."""

    stack: str
    config: lab_config.LabConfig
    executables: Mapping[str, str]  # kubectl, istioctl -> the program to run
    env: Mapping[str, str]  # the user's environment with KUBECONFIG set for the stack
    run: Runner  # captured runs (placeholder look-ups, the check that the lab is up)
    stream: Callable[[Sequence[str], Mapping[str, str]], int]  # runs a step with its output on the terminal
    out: TextIO
    # A tool the lab could not provide (istioctl has no pinned digest yet) -> the sentence saying how to get it:
    # its steps are printed, not run, and the others still run.
    unavailable: Mapping[str, str] = field(default_factory=dict)

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def _kubectl(self, args: Sequence[str]) -> str:
        result = self.run([self.executables["kubectl"], *args], env=self.env, timeout=60)
        value = result.stdout.strip() if result.returncode == 0 else ""
        if not value:
            reason = last_line(result.stderr) if result.returncode else "no such pod"
            raise LabError(f"`kubectl {shlex.join(args)}` found nothing ({reason}): check the lab with `{LAB_SCRIPT} "
                           f"verify {self.stack}`, then run `{LAB_SCRIPT} tour {self.stack}` again.")
        return value

    def check_up(self) -> None:
        """Stop with one sentence when the stack's cluster or its Istio does not answer."""
        args = ["-n", catalog.ISTIO_NAMESPACE, "get", "daemonset", "ztunnel", "-o", "name"]
        result = self.run([self.executables["kubectl"], *args], env=self.env, timeout=60)
        if result.returncode != 0:
            raise LabError(f"The lab of stack {self.stack} is not up (`kubectl {shlex.join(args)}`: "
                           f"{last_line(result.stderr)}): run `{LAB_SCRIPT} up {self.stack}` first.")

    def run_all(self) -> int:
        """Run every step; 0 when each answered as the tutorial says, 1 otherwise."""
        self.check_up()
        all_steps = steps(self.config)
        mode, values, surprises = self.config.mesh_mode, {"stack": self.stack}, []
        not_run: dict[str, list[int]] = {}  # tool -> the steps that need it
        self.say(f"The tutorial on stack {self.stack} ({mode}): {len(all_steps)} steps. Every command runs as printed; "
                 f"after `eval \"$({LAB_SCRIPT} kubeconfig {self.stack})\"` plain kubectl and istioctl do too.")
        for number, step in enumerate(all_steps, 1):
            self.say()
            self.say(f"== {number}/{len(all_steps)} {step.title}  [tutorial: {step.section}]")
            skip = step.skip_reason(self.stack, self.config)
            if skip:
                self.say(f"   {skip}")
                continue
            names = [name for arg in step.args for name in _PLACEHOLDER.findall(arg) if name not in values]
            resolve(names, self.config.apps_namespace, self._kubectl, values)
            self.say(f"$ {step.command(self.stack, values)}")
            if step.tool == "lab":
                self.say(f"   Look for: {step.look_for}")
                continue
            if step.tool in self.unavailable:
                first = not_run.setdefault(step.tool, [])
                self.say(f"   Not run: {self.unavailable[step.tool]}" if not first else
                         f"   Not run: no {step.tool} (see step {first[0]}).")
                first.append(number)
                continue
            code = self.stream([self.executables[step.tool], *(fill(arg, values) for arg in step.args)], self.env)
            self.say(f"   Look for: {step.look_for}")
            if code not in step.expect_exit:
                surprises.append(number)
                expected = " or ".join(map(str, step.expect_exit))
                self.say(f"   (exit {code}, where the tutorial expects {expected}: read the output above)")
        self.say()
        if surprises:
            self.say(f"Steps {', '.join(map(str, surprises))} did not answer as the tutorial expects: run "
                     f"`{LAB_SCRIPT} verify {self.stack}` to see which check fails.")
            return 1
        if not_run:
            skipped = ", ".join(f"steps {', '.join(map(str, numbers))} need {tool}"
                                for tool, numbers in not_run.items())
            self.say(f"Tour done: every step that ran answered as the tutorial expects; {skipped} (see step "
                     f"{min(n for numbers in not_run.values() for n in numbers)} for how to get it).")
            return 0
        self.say("Tour done: every step answered as the tutorial expects. Run any command above again on its own.")
        return 0


def list_steps(stack: str, config: lab_config.LabConfig, out: TextIO) -> None:
    """Print the steps and their commands without running anything (placeholders shown as <what they are>)."""
    for number, step in enumerate(steps(config), 1):
        print(f"{number:2}. {step.title}  [tutorial: {step.section}]", file=out)
        print(f"    $ {step.command(stack, {'stack': stack} if step.tool == 'lab' else None)}", file=out)
        skip = step.skip_reason(stack, config)
        print(f"    {skip}" if skip else f"    Look for: {step.look_for}", file=out)
