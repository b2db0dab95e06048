"""./lab.sh tour: the step list of each mode, and a live walk against fake kind, kubectl and istioctl."""

from __future__ import annotations

import re
import shlex

import pytest

from lab import cli, tour
from lab.config import load
from tests.lab.test_access import istioctl, lab, tool_calls  # noqa: F401 (fixtures)
from tests.lab.test_cli import KUBECTL_JSON, context, machine, project  # noqa: F401 (fixtures)

L7_ONLY = [
    "The waypoint", "The waypoint is ready", "An HTTP method the L7 policy refuses",
    "The ztunnel on sleep's node sends to the waypoint",
]


def skipped(stack: str, config) -> list[str]:
    return [step.title for step in tour.steps(config) if step.skip_reason(stack, config)]


def test_both_modes_walk_the_same_steps_in_the_tutorials_order():
    l4, l7 = tour.steps(load({}, "l4-only")), tour.steps(load({"meshMode": "l7"}, "l7"))
    assert [s.title for s in l4] == [s.title for s in l7]
    sections = [s.section.split(",")[0].split(" (")[0] for s in l4]
    assert list(dict.fromkeys(sections)) == [
        "Installation", "Deploying the demo apps", "mTLS certificate", "L4 processing", "L7 processing",
        "Kiali dashboard"]


def test_l7_steps_say_so_in_l4_only_and_run_in_l7():
    l4 = load({}, "l4-only")
    assert skipped("l4-only", l4) == L7_ONLY
    reason = next(s for s in tour.steps(l4) if s.title == "The waypoint").skip_reason("l4-only", l4)
    assert reason == (
        "Only in l7: this stack is l4-only. See it with `./lab.sh tour l7`, or switch this stack with `./lab.sh pulumi "
        "config set istio-ambient-lab:meshMode l7 --stack l4-only` and `./lab.sh up l4-only`.")
    assert skipped("l7", load({"meshMode": "l7"}, "l7")) == []
    bare = load({"observability": "false"}, "l4-only")
    assert skipped("l4-only", bare) == [*L7_ONLY, "Kiali is installed", "Open the graph (run it yourself: it stays "
                                        "until Ctrl-C)"]


def test_todays_commands_replace_the_tutorials():
    l7 = {s.title: s for s in tour.steps(load({"meshMode": "l7", "appsNamespace": "shop"}, "l7"))}
    assert l7["Which ztunnel serves which pod"].command("l7") == (
        "./lab.sh istioctl l7 ztunnel-config workloads --workload-namespace shop")
    assert l7["sleep's certificate, from the ztunnel on its node"].command("l7", {"sleep_node": "w1"}) == (
        "./lab.sh istioctl l7 ztunnel-config certificates --node w1")
    assert l7["The ztunnel on sleep's node"].command("l7") == (
        "./lab.sh kubectl l7 -n istio-system logs '<ztunnel on sleep node>' --since 60s")
    assert l7["The waypoint is ready"].command("l7") == "./lab.sh istioctl l7 waypoint status -n shop"
    assert l7["The waypoint"].command("l7") == "./lab.sh istioctl l7 waypoint list -n shop"
    assert "%{http_code}" in l7["sleep calls productpage"].command("l7"), "curl's own braces are not placeholders"


def test_the_l4_deny_is_a_reset_and_the_l7_deny_a_403():
    def notsleep(config):
        return next(s for s in tour.steps(config) if s.title == "notsleep is refused")

    assert notsleep(load({}, "l4-only")).expect_exit == (56, 52)  # a reset, or an empty reply: both ztunnel
    assert notsleep(load({"meshMode": "l7"}, "l7")).expect_exit == (0,)
    assert "403" in notsleep(load({"meshMode": "l7"}, "l7")).look_for


def test_list_prints_every_step_without_a_cluster(project, machine):  # noqa: F811
    ctx = context(project, machine)
    assert cli.main(["tour", "l4-only", "--list"], ctx) == 0
    printed = ctx.out.getvalue()
    assert len(re.findall(r"^ ?\d+\. ", printed, re.M)) == len(tour.steps(load({}, "l4-only")))
    assert "$ ./lab.sh dashboard l4-only" in printed
    assert machine.calls() == []


@pytest.fixture
def cluster(lab):  # noqa: F811
    """kubectl that knows where sleep and productpage run and which ztunnel is on each node; notsleep is reset."""
    lab.bin.add("kubectl", f"""
[ "$1" = version ] && {{ echo '{KUBECTL_JSON}'; exit 0; }}
printf "%s | %s\n" "kubectl $*" "$KUBECONFIG" >> {lab.calls_log}
case "$*" in
  *"get daemonset ztunnel"*)
    [ -n "$NO_ISTIO" ] && {{ echo 'Error from server (NotFound): daemonsets.apps "ztunnel" not found' >&2; exit 1; }}
    echo daemonset.apps/ztunnel ;;
  *"-l app=sleep"*"nodeName"*) printf worker-a ;;
  *"-l app=productpage"*"nodeName"*) printf worker-b ;;
  *"spec.nodeName=worker-a"*) printf ztunnel-aaaaa ;;
  *"spec.nodeName=worker-b"*) printf ztunnel-bbbbb ;;
  *"deploy/notsleep"*) echo "command terminated with exit code 56" >&2; exit ${{NOTSLEEP_EXIT:-56}} ;;
  *) echo "output of kubectl $1" ;;
esac""")
    return lab


def test_the_tour_runs_each_step_as_printed_with_the_stacks_kubeconfig(project, cluster, capfd):  # noqa: F811
    (project / "stacks" / "Pulumi.l4-only.yaml").write_text("config:\n  istio-ambient-lab:clusterName: ambient-l7\n")
    ctx = context(project, cluster)
    assert cli.main(["tour", "l4-only"], ctx) == 0
    printed = ctx.out.getvalue()
    kubeconfig = f"{project}/.lab/kube/l4-only.kubeconfig"
    ran = [line.split(" | ") for line in tool_calls(cluster)]
    assert {used for _, used in ran} == {kubeconfig}
    ran = [call for call, _ in ran]
    # Every printed command ran, with the names kubectl found filled in, and nothing the tutorial does not show.
    shown = [line[2:] for line in printed.splitlines() if line.startswith("$ ")]
    steps = [s for s in tour.steps(load({}, "l4-only")) if not s.skip_reason("l4-only", load({}, "l4-only"))]
    assert len(shown) == len(steps)
    for command in shown:
        words = shlex.split(command)
        if words[1] in ("kubectl", "istioctl"):
            assert " ".join([words[1], *words[3:]]) in ran, command  # the fakes log "$*"
    assert "$ ./lab.sh istioctl l4-only ztunnel-config certificates --node worker-a" in printed
    assert "$ ./lab.sh kubectl l4-only -n istio-system logs ztunnel-bbbbb --since 60s" in printed
    assert printed.count("Only in l7: this stack is l4-only.") == len(L7_ONLY)
    assert printed.count("Look for: ") == len(steps)
    assert printed.rstrip().endswith("Tour done: every step answered as the tutorial expects. Run any command above "
                                     "again on its own.")
    # Each placeholder was looked up once, even where two steps need it.
    assert sum("-l app=sleep" in call for call in ran) == 1
    assert "output of kubectl -n" in capfd.readouterr().out, "the steps' output goes to the terminal live"


def test_a_step_that_answers_otherwise_is_named_and_the_tour_fails(project, cluster):  # noqa: F811
    (project / "stacks" / "Pulumi.l4-only.yaml").write_text("config:\n  istio-ambient-lab:clusterName: ambient-l7\n")
    ctx = context(project, cluster, NOTSLEEP_EXIT="0")
    assert cli.main(["tour", "l4-only"], ctx) == 1
    number = [s.title for s in tour.steps(load({}, "l4-only"))].index("notsleep is refused") + 1
    printed = ctx.out.getvalue()
    assert "(exit 0, where the tutorial expects 56 or 52: read the output above)" in printed
    assert printed.rstrip().endswith(f"Steps {number} did not answer as the tutorial expects: run `./lab.sh verify "
                                     "l4-only` to see which check fails.")


def test_a_cluster_without_istio_is_not_up(project, cluster, capsys):  # noqa: F811
    ctx = context(project, cluster, NO_ISTIO="1")
    assert cli.main(["tour", "l7"], ctx) == 1
    assert capsys.readouterr().err == (
        "The lab of stack l7 is not up (`kubectl -n istio-system get daemonset ztunnel -o name`: Error from server "
        "(NotFound): daemonsets.apps \"ztunnel\" not found): run `./lab.sh up l7` first.\n")
    assert ctx.out.getvalue() == ""


def test_without_istioctl_of_the_stacks_version_the_kubectl_steps_still_run(project, cluster, capsys):  # noqa: F811
    """istioctl has no pinned digest: the tour does not stop, it says once how to get istioctl, installs nothing."""
    istioctl(cluster, "1.30.5")
    ctx = context(project, cluster, LAB_DOWNLOAD_BASE_ISTIOCTL="https://127.0.0.1:9/unreachable", NOTSLEEP_EXIT="0")
    assert cli.main(["tour", "l7"], ctx) == 0
    printed, terminal = ctx.out.getvalue(), capsys.readouterr()
    config = load({"meshMode": "l7"}, "l7")
    needs = [n for n, s in enumerate(tour.steps(config), 1) if s.tool == "istioctl"]
    assert len(needs) == 5
    ran = tool_calls(cluster)
    assert not any(call.startswith("istioctl") for call in ran)
    assert any("deploy/sleep" in call for call in ran), "the kubectl steps ran"
    how = ("   Not run: No SHA-256 of istioctl v1.31.1 for linux/amd64 is pinned in lab/tools.py: install istioctl "
           "v1.31.1 yourself and put it on your PATH, or set LAB_TRUST_PUBLISHED_CHECKSUMS=1 to trust the checksum "
           "file published with the release alone.")
    assert printed.count(how) == 1
    assert printed.count(f"   Not run: no istioctl (see step {needs[0]}).") == 4
    assert printed.rstrip().endswith(
        f"Tour done: every step that ran answered as the tutorial expects; steps {', '.join(map(str, needs))} need "
        f"istioctl (see step {needs[0]} for how to get it).")
    assert "installing" not in printed + terminal.out + terminal.err
    assert not (project / ".lab" / "tools" / "istio-1.31.1").exists()
