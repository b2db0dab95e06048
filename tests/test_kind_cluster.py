"""The kind lifecycle module against fake `kind` and `kubectl` executables on PATH."""

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from lab import kind_cluster
from tests.harness import ROOT

OWNER = "istio-ambient-lab.l4-only"  # the stack id the component passes as --owner
OURS = OWNER + ".0a1b2c3d"  # the owner label this stack's state created the cluster with
CREATED = f"created kind cluster 'lab' (owner {OURS})."  # the create's output, kept in the state

FAKE_KIND = textwrap.dedent(
    """\
    #!/usr/bin/env python3
    import json, os, sys
    state_file = os.environ["FAKE_STATE"]
    state = json.load(open(state_file))
    args = sys.argv[1:]
    with open(state_file + ".log", "a") as log:
        log.write(" ".join(args) + "\\n")
    def save():
        json.dump(state, open(state_file, "w"))
    def flag(name):
        return args[args.index(name) + 1]
    if args[:2] == ["get", "clusters"]:
        print("\\n".join(state["clusters"]) if state["clusters"] else "No kind clusters found.")
    elif args[:2] == ["get", "kubeconfig"]:
        if flag("--name") in state.get("stopped", []):
            sys.stderr.write("ERROR: failed to get cluster internal kubeconfig: command failed\\n"); sys.exit(1)
        print("apiVersion: v1\\nclient-key-data: SECRET-" + flag("--name"))
    elif args[:2] == ["create", "cluster"]:
        if flag("--name") in state.get("foreign_nodes", []):  # containers of that name, not listed as a cluster
            sys.stderr.write('ERROR: failed to create cluster: node(s) already exist for a cluster with the name "'
                             + flag("--name") + '"\\n'); sys.exit(1)
        if state.get("create_fails"):
            if "--retain" in args:  # kind deletes the nodes it made on failure unless told to retain them
                state["clusters"].append(flag("--name")); save()
            sys.stderr.write("ERROR: failed to create cluster: boom\\n"); sys.exit(1)
        import yaml
        config = yaml.safe_load(open(flag("--config")))
        state["clusters"].append(flag("--name"))
        state["owners"][flag("--name")] = config["nodes"][0].get("labels", {}).get("istio-ambient-lab/owner")
        state["kubeconfig_flag"] = flag("--kubeconfig")
        save()
    elif args[:2] == ["delete", "cluster"]:
        state["clusters"].remove(flag("--name")); save()
    else:
        sys.exit(99)
    """
)

FAKE_KUBECTL = textwrap.dedent(
    """\
    #!/usr/bin/env python3
    import json, os, sys
    state_file = os.environ["FAKE_STATE"]
    state = json.load(open(state_file))
    args = sys.argv[1:]
    assert args[0] == "--kubeconfig" and os.path.exists(args[1]), "kubectl must get the temporary kubeconfig"
    assert oct(os.stat(args[1]).st_mode & 0o777) == "0o600"
    if args[2:4] == ["get", "--raw"]:
        sys.exit(0)
    node = args[4]
    name = node.removesuffix("-control-plane")
    if args[2:4] == ["get", "node"]:
        owner = state["owners"].get(name)
        print(json.dumps({"metadata": {"labels": {"istio-ambient-lab/owner": owner} if owner else {}}}))
    elif args[2:4] == ["label", "node"]:
        state["owners"][name] = args[5].split("=", 1)[1]
        json.dump(state, open(state_file, "w"))
    """
)


FAKE_DOCKER = textwrap.dedent(
    """\
    #!/usr/bin/env python3
    import json, os, sys
    state_file = os.environ["FAKE_STATE"]
    state = json.load(open(state_file))
    args = sys.argv[1:]
    with open(state_file + ".log", "a") as log:
        log.write("docker " + " ".join(args) + "\\n")
    if args[:2] == ["ps", "-a"]:
        name = args[args.index("--filter") + 1].rsplit("=", 1)[1]
        if name in state["clusters"]:
            status = "exited" if name in state.get("stopped", []) else "running"
            for node in (f"{name}-control-plane", f"{name}-worker"):
                print(node, status)
    elif args[0] == "start":
        state["stopped"] = [c for c in state.get("stopped", []) if not any(n.startswith(c + "-") for n in args[1:])]
        json.dump(state, open(state_file, "w"))
    else:
        sys.exit(99)
    """
)


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("kind", FAKE_KIND), ("kubectl", FAKE_KUBECTL), ("docker", FAKE_DOCKER)):
        path = bin_dir / name
        path.write_text(body.replace("#!/usr/bin/env python3", f"#!{sys.executable}"))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    state_file = tmp_path / "state.json"

    def set_state(clusters=(), owners=None, **extra):
        state_file.write_text(json.dumps({"clusters": list(clusters), "owners": owners or {}, **extra}))

    def get_state():
        return json.loads(state_file.read_text())

    def calls():
        log = tmp_path / "state.json.log"
        return log.read_text().splitlines() if log.exists() else []

    set_state()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_STATE", str(state_file))
    return set_state, get_state, calls


def config_yaml(name="lab"):
    return kind_cluster.render_config(kind_cluster.kind_config(name, 2, "img@sha256:" + "0" * 64, 8080))


def test_create_makes_the_cluster_with_its_owner_label_and_a_throwaway_kubeconfig(fake_tools):
    set_state, get_state, calls = fake_tools
    printed = kind_cluster.create("lab", OWNER, config_yaml())
    owner = kind_cluster.owner_in(printed)
    assert printed == f"created kind cluster 'lab' (owner {owner})."
    assert owner.startswith(OWNER + ".") and len(owner) == len(OURS)
    state = get_state()
    assert state["clusters"] == ["lab"] and state["owners"]["lab"] == owner
    assert not state["kubeconfig_flag"].startswith(os.path.expanduser("~")), "never the user's kubeconfig"
    assert not os.path.exists(state["kubeconfig_flag"]), "the throwaway kubeconfig is removed"


def test_create_is_idempotent_for_the_owner(fake_tools):
    set_state, get_state, calls = fake_tools
    set_state(["lab"], {"lab": OURS})
    assert kind_cluster.create("lab", OWNER, config_yaml(), previous_output=CREATED) == (
        f"kind cluster 'lab' already exists and belongs to this stack; reusing it (owner {OURS})."
    )
    assert not any(c.startswith("create") for c in calls())


def test_two_states_with_the_same_stack_name_never_share_a_cluster(fake_tools):
    """Another checkout (or a deleted .lab/) has the same project and stack name but not this state's token."""
    set_state, get_state, calls = fake_tools
    set_state(["lab"], {"lab": OWNER + ".ffffffff"})
    with pytest.raises(kind_cluster.KindError, match=r"was made by stack l4-only from another state \(a deleted "
                       r"\.lab/ or another checkout; owner label istio-ambient-lab\.l4-only\.ffffffff\); if that lab "
                       r"is no longer needed, remove it with `\.lab/tools/kind delete cluster --name lab`"):
        kind_cluster.create("lab", OWNER, config_yaml())
    assert kind_cluster.delete("lab", OWNER, previous_output=CREATED) == (
        "kind cluster 'lab' now belongs to istio-ambient-lab.l4-only.ffffffff; left it alone.")
    assert get_state()["clusters"] == ["lab"]


def test_a_cluster_of_the_same_name_from_elsewhere_is_refused_with_the_way_out(fake_tools):
    set_state, get_state, calls = fake_tools
    set_state(["lab"], {})
    with pytest.raises(kind_cluster.KindError) as caught:
        kind_cluster.create("lab", OWNER, config_yaml())
    assert str(caught.value) == (
        "kind cluster 'lab' already exists and was not created by this stack; adopt it with "
        "`./lab.sh up l4-only --adopt` or, if nobody needs it, remove it with `.lab/tools/kind delete cluster "
        "--name lab`, then run `./lab.sh up l4-only` again."
    )
    set_state(["lab"], {"lab": "istio-ambient-lab.l7"})
    with pytest.raises(kind_cluster.KindError, match="already exists and belongs to istio-ambient-lab.l7; adopt"):
        kind_cluster.create("lab", OWNER, config_yaml())


def test_names_match_whole_lines_never_substrings(fake_tools):
    set_state, get_state, calls = fake_tools
    set_state(["lab-old", "mylab"], {})
    assert kind_cluster.create("lab", OWNER, config_yaml()).startswith("created kind cluster 'lab' (owner ")


def test_adopt_labels_the_cluster_so_later_runs_see_it_as_ours(fake_tools):
    set_state, get_state, calls = fake_tools
    set_state(["lab"], {})
    printed = kind_cluster.create("lab", OWNER, config_yaml(), adopt=True)
    owner = kind_cluster.owner_in(printed)
    assert printed == f"adopted kind cluster 'lab'; `./lab.sh destroy l4-only` will delete it (owner {owner})."
    assert get_state()["owners"]["lab"] == owner
    assert "reusing it" in kind_cluster.create("lab", OWNER, config_yaml(), previous_output=printed)


def test_a_one_time_adoption_marker_is_consumed_by_the_create(fake_tools, tmp_path, monkeypatch):
    """`./lab.sh up --adopt` leaves a marker in the project (the create's working directory); one create uses it."""
    set_state, get_state, calls = fake_tools
    monkeypatch.chdir(tmp_path)
    set_state(["lab", "other"], {})
    monkeypatch.setenv(kind_cluster.ADOPT_NONCE_ENV, kind_cluster.request_adoption(tmp_path, "lab"))
    marker = tmp_path / ".lab" / "adopt-once" / "lab"
    assert stat.S_IMODE(marker.stat().st_mode) == 0o600
    with pytest.raises(kind_cluster.KindError, match="'other' already exists and was not created by this stack"):
        kind_cluster.create("other", OWNER, config_yaml("other"))  # a marker is for its own cluster only
    assert kind_cluster.create("lab", OWNER, config_yaml()).startswith("adopted kind cluster 'lab'")
    assert not marker.exists()
    set_state(["lab"], {})  # the next cluster of that name, from another state: refused again
    with pytest.raises(kind_cluster.KindError, match="already exists and was not created by this stack"):
        kind_cluster.create("lab", OWNER, config_yaml())


def test_a_marker_left_by_a_killed_run_adopts_nothing(fake_tools, tmp_path, monkeypatch):
    """`./lab.sh up --adopt` killed before it could withdraw its marker: the next create, without --adopt, must not
    take the cluster over silently. The marker holds the nonce of the run that asked, which no later run carries."""
    set_state, get_state, calls = fake_tools
    monkeypatch.chdir(tmp_path)
    set_state(["lab"], {})
    kind_cluster.request_adoption(tmp_path, "lab")
    monkeypatch.delenv(kind_cluster.ADOPT_NONCE_ENV, raising=False)
    with pytest.raises(kind_cluster.KindError, match="already exists and was not created by this stack"):
        kind_cluster.create("lab", OWNER, config_yaml())
    assert not (tmp_path / ".lab" / "adopt-once" / "lab").exists(), "the stale marker is cleared"


def test_a_marker_counts_only_for_the_run_whose_nonce_it_holds_never_for_a_reused_pid(fake_tools, tmp_path,
                                                                                      monkeypatch):
    """A process id is reused: a marker naming the pid of a killed run would count for whichever process now has it
    (this one, say). A nonce is never drawn twice."""
    set_state, get_state, calls = fake_tools
    monkeypatch.chdir(tmp_path)
    set_state(["lab"], {})
    marker = tmp_path / ".lab" / "adopt-once" / "lab"
    kind_cluster.request_adoption(tmp_path, "lab")  # the killed run's marker
    monkeypatch.setenv(kind_cluster.ADOPT_NONCE_ENV, kind_cluster.request_adoption(tmp_path / "other", "lab"))
    with pytest.raises(kind_cluster.KindError, match="already exists and was not created by this stack"):
        kind_cluster.create("lab", OWNER, config_yaml())
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"lab {os.getpid()}\n")  # the old format: a live pid, this very process's
    with pytest.raises(kind_cluster.KindError, match="already exists and was not created by this stack"):
        kind_cluster.create("lab", OWNER, config_yaml())
    assert not kind_cluster.consume_adoption(tmp_path, "lab", nonce=""), "no marker, no nonce: nothing"


def test_a_failed_command_is_quoted_from_its_stderr_never_its_stdout(tmp_path):
    """`kind get kubeconfig` prints the kubeconfig on stdout: a failure must not carry it into an error message."""
    from tests import realistic_secrets

    script = tmp_path / "kind"
    script.write_text(f"cat <<'EOF'\n{realistic_secrets.KUBECONFIG}EOF\nexit 1\n")
    with pytest.raises(kind_cluster.KindError) as caught:
        kind_cluster._run(["sh", str(script), "get"])
    assert str(caught.value) == f"`sh {script} get` failed: exit 1"
    script.write_text(f"echo 'proxyconnect tcp: http://lab:{realistic_secrets.PROXY_PASSWORD}@proxy:3128' >&2\nexit 1\n")
    with pytest.raises(kind_cluster.KindError) as caught:
        kind_cluster._run(["sh", str(script), "get"])
    assert str(caught.value).endswith("failed: proxyconnect tcp: http://lab:REDACTED@proxy:3128")


def test_a_failed_create_removes_the_half_made_cluster(fake_tools, monkeypatch):
    set_state, get_state, calls = fake_tools
    set_state(create_fails=True)
    with pytest.raises(kind_cluster.KindError) as caught:
        kind_cluster.create("lab", OWNER, config_yaml())
    assert str(caught.value) == (
        "kind could not create cluster 'lab' (ERROR: failed to create cluster: boom); run `./lab.sh preflight "
        "l4-only` to check Docker and the host, then `./lab.sh up l4-only` again."
    )
    assert get_state()["clusters"] == []


def test_a_failed_create_never_deletes_a_cluster_it_has_not_proven_its_own(fake_tools):
    """kind refuses before making anything when nodes of that name exist: they may be someone else's."""
    set_state, get_state, calls = fake_tools
    set_state(foreign_nodes=["lab"])
    with pytest.raises(kind_cluster.KindError, match="node\\(s\\) already exist"):
        kind_cluster.create("lab", OWNER, config_yaml())
    assert not any(call.startswith("delete") for call in calls())


def test_a_failed_create_can_be_kept_for_debugging(fake_tools, monkeypatch):
    set_state, get_state, calls = fake_tools
    set_state(create_fails=True)
    monkeypatch.setenv(kind_cluster.KEEP_FAILED_ENV, "1")
    with pytest.raises(kind_cluster.KindError):
        kind_cluster.create("lab", OWNER, config_yaml())
    assert get_state()["clusters"] == ["lab"]


def test_delete_own_cluster_gone_cluster_and_someone_elses(fake_tools):
    set_state, get_state, calls = fake_tools
    set_state(["lab"], {"lab": OURS})
    assert kind_cluster.delete("lab", OWNER, previous_output=CREATED) == "deleted kind cluster 'lab'."
    assert get_state()["clusters"] == []
    assert kind_cluster.delete("lab", OWNER, previous_output=CREATED) == "kind cluster 'lab' is already gone."
    set_state(["lab"], {"lab": "someone.else"})
    assert kind_cluster.delete("lab", OWNER, previous_output=CREATED) == (
        "kind cluster 'lab' now belongs to someone.else; left it alone.")
    assert get_state()["clusters"] == ["lab"]


def test_delete_from_a_state_without_owner_token_matches_the_bare_stack_id(fake_tools):
    """A stack brought up before owner tokens recorded none: its cluster carries the project.stack label."""
    set_state, get_state, calls = fake_tools
    set_state(["lab"], {"lab": OWNER})
    assert kind_cluster.delete("lab", OWNER, previous_output="created kind cluster 'lab'.") == "deleted kind cluster 'lab'."


def test_delete_leaves_a_cluster_without_owner_label_alone(fake_tools):
    """The user deleted ours by hand and made another of the same name: not ours to delete."""
    set_state, get_state, calls = fake_tools
    set_state(["lab"], {})
    assert kind_cluster.delete("lab", OWNER) == "kind cluster 'lab' was not made by this stack; left it alone."
    assert get_state()["clusters"] == ["lab"]


def test_delete_of_a_cluster_whose_owner_cannot_be_read_stops_with_what_to_do(fake_tools):
    set_state, get_state, calls = fake_tools
    set_state(["lab"], {"lab": OURS}, stopped=["lab"])
    with pytest.raises(kind_cluster.KindError) as caught:
        kind_cluster.delete("lab", OWNER, previous_output=CREATED)
    assert str(caught.value) == (
        "kind cluster 'lab' exists but its owner cannot be read (`kind get kubeconfig` failed: ERROR: failed to "
        "get cluster internal kubeconfig: command failed); start it with `./lab.sh up l4-only` and destroy again, "
        "or, if it is this stack's, delete it with `.lab/tools/kind delete cluster --name lab` and destroy again."
    )
    assert get_state()["clusters"] == ["lab"]


def test_create_over_a_stopped_cluster_says_what_to_do(fake_tools):
    set_state, get_state, calls = fake_tools
    set_state(["lab"], {"lab": OWNER}, stopped=["lab"])
    with pytest.raises(kind_cluster.KindError, match=r"already exists but does not say who owns it .*; start it with "
                       r"`./lab.sh up l4-only` if it is this stack's"):
        kind_cluster.create("lab", OWNER, config_yaml())


def test_kubeconfig_of_a_missing_cluster_says_what_to_do(fake_tools):
    set_state, get_state, calls = fake_tools
    with pytest.raises(kind_cluster.KindError) as caught:
        kind_cluster.kubeconfig("lab")
    assert str(caught.value) == (
        "kind cluster 'lab' is recorded in the stack but no longer exists; run `./lab.sh up` for the stack, which "
        "creates it again (`./lab.sh destroy` removes what is left of it)."
    )


def test_kubeconfig_of_a_stopped_cluster_says_how_to_start_it(fake_tools):
    set_state, get_state, calls = fake_tools
    set_state(["lab"], {"lab": OWNER}, stopped=["lab"])
    with pytest.raises(kind_cluster.KindError) as caught:
        kind_cluster.kubeconfig("lab")
    assert str(caught.value) == (
        "kind cluster 'lab' is stopped (Docker or the host restarted); run `./lab.sh up` for the stack, which starts "
        "it, or start it yourself with `docker start lab-control-plane lab-worker`."
    )


def test_start_brings_a_stopped_cluster_back_and_leaves_a_running_one_alone(fake_tools):
    set_state, get_state, calls = fake_tools
    set_state(["lab"], {"lab": OWNER}, stopped=["lab"])
    assert kind_cluster.start("lab") == "started kind cluster 'lab' (2 node(s))."
    assert get_state()["stopped"] == []
    assert "docker start lab-control-plane lab-worker" in calls()
    assert kind_cluster.start("lab") == "kind cluster 'lab' is running."
    assert kind_cluster.kubeconfig("lab").startswith("apiVersion: v1")


def test_a_failed_kubeconfig_read_leaves_no_temporary_file(fake_tools, tmp_path, monkeypatch):
    set_state, get_state, calls = fake_tools
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # take TMPDIR as set above
    set_state(["lab"], {"lab": OWNER}, stopped=["lab"])
    with pytest.raises(kind_cluster.OwnerUnknown):
        kind_cluster.cluster_owner("lab")
    assert os.listdir(tmp_path / "tmp") == []


def test_cli_as_pulumi_runs_it(fake_tools):
    """The exact command line the component stores, run from the project root with the config on stdin."""
    set_state, get_state, calls = fake_tools
    env = dict(os.environ)
    create = subprocess.run(
        [sys.executable, "-m", "lab.kind_cluster", "create", "--name", "lab", "--owner", OWNER],
        input=config_yaml(), capture_output=True, text=True, cwd=ROOT, env=env,
    )
    assert create.returncode == 0, create.stderr
    assert create.stdout.startswith("created kind cluster 'lab' (owner istio-ambient-lab.l4-only.")
    kubeconfig = subprocess.run([sys.executable, "-m", "lab.kind_cluster", "kubeconfig", "--name", "lab"],
                                capture_output=True, text=True, cwd=ROOT, env=env)
    assert kubeconfig.stdout.startswith("apiVersion: v1") and kubeconfig.stderr == ""
    clash = subprocess.run(
        [sys.executable, "-m", "lab.kind_cluster", "create", "--name", "lab", "--owner", "other.stack"],
        input=config_yaml(), capture_output=True, text=True, cwd=ROOT, env=env,
    )
    assert clash.returncode == 1
    assert clash.stderr.startswith("error: kind cluster 'lab' already exists and belongs to istio-ambient-lab.l4-only")
    assert "Traceback" not in clash.stderr
    # pulumi-command runs the stored delete with the create's stdout in PULUMI_COMMAND_STDOUT: that names the owner.
    delete = [sys.executable, "-m", "lab.kind_cluster", "delete", "--name", "lab", "--owner", OWNER]
    stranger = subprocess.run(delete, capture_output=True, text=True, cwd=ROOT,
                              env={**env, "PULUMI_COMMAND_STDOUT": CREATED})
    assert stranger.stdout.startswith("kind cluster 'lab' now belongs to") and get_state()["clusters"] == ["lab"]
    ours = subprocess.run(delete, capture_output=True, text=True, cwd=ROOT,
                          env={**env, "PULUMI_COMMAND_STDOUT": create.stdout.strip()})
    assert ours.stdout == "deleted kind cluster 'lab'.\n" and get_state()["clusters"] == []


def test_missing_kind_is_a_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(kind_cluster.KindError) as caught:
        kind_cluster.existing_clusters()
    assert str(caught.value) == "`kind` was not found on PATH; install it or run the lab through ./lab.sh up."


def test_kind_config_matches_the_kind_schema_we_rely_on():
    config = kind_cluster.kind_config("lab", 3, "kindest/node:v1.36.1@sha256:" + "1" * 64, 9090)
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    allowed_node_keys = {"role", "image", "labels", "extraPortMappings"}
    for node in config["nodes"]:
        assert set(node) <= allowed_node_keys
        assert node["role"] in ("control-plane", "worker")
    for mapping in config["nodes"][0]["extraPortMappings"]:
        assert set(mapping) == {"containerPort", "hostPort", "listenAddress", "protocol"}
        assert mapping["hostPort"] == 9090
