"""`python -m verify`: usage errors, exit codes, progress, table and JSON output, with a fake cluster boundary."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest

from verify.__main__ import main, parse_options
from tests import realistic_secrets
from verify.cluster import ClusterError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(fx):
    """Run main() with a fake cluster and fake clocks; return (exit code, stdout, stderr, options opened)."""

    def run_main(argv, cluster=None):
        clock = fx.FakeClock()
        out, err = io.StringIO(), io.StringIO()
        opened = []

        def open_cluster(options):
            opened.append(options)
            return nullcontext(cluster)

        code = main(argv, open_cluster=open_cluster, stdout=out, stderr=err, sleep=clock.sleep, clock=clock,
                    now=lambda: fx.NOW)
        return code, out.getvalue(), err.getvalue(), opened

    return run_main


def test_missing_mode_is_a_usage_error(run):
    code, _, err, opened = run(["--context", "kind-lab"])
    assert code == 2 and not opened
    assert "the following arguments are required: --mode" in err


def test_no_context_refuses_to_guess(run):
    code, _, err, opened = run(["--mode", "l7"])
    assert code == 2 and not opened
    assert err.strip() == ("python -m verify: Pass --kind-cluster NAME or --context CONTEXT, so the checks never run "
                           "against your current kubectl context by accident.")


def test_kind_cluster_and_context_together_is_a_usage_error(run):
    code, _, err, _ = run(["--mode", "l7", "--kind-cluster", "lab", "--context", "kind-lab"])
    assert code == 2 and "not both" in err


def test_bad_timeout_is_a_usage_error(run):
    code, _, err, _ = run(["--mode", "l7", "--context", "x", "--timeout", "0"])
    assert code == 2 and "--timeout must be a positive number" in err


def test_kubeconfig_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "config"))
    assert parse_options(["--mode", "l7", "--context", "c"]).kubeconfig == str(tmp_path / "config")
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_options(["--mode", "l7", "--context", "c"]).kubeconfig == str(tmp_path / ".kube" / "config")
    assert parse_options(["--mode", "l7", "--kind-cluster", "lab"]).kubeconfig is None


def test_unreachable_cluster_exits_2_with_one_sentence(run, fx):
    cluster = fx.FakeCluster(nodes_error=ClusterError("`kubectl get nodes` failed: connection refused"))
    code, out, err, _ = run(["--mode", "l7", "--context", "kind-gone"], cluster)
    assert code == 2 and out == ""
    assert err.startswith("python -m verify: Cannot reach the cluster (") and "Traceback" not in err
    assert err.count("\n") == 1


def test_json_report_on_a_healthy_lab(run, fx, healthy, tmp_path):
    report_file = tmp_path / "reports" / "verify.json"
    code, out, err, opened = run(["--mode", "l7", "--context", "kind-lab", "--json", "--report-file",
                                  str(report_file)], healthy("l7"))
    assert code == 0, err
    assert opened[0].context == "kind-lab" and opened[0].mode == "l7"
    report = json.loads(out)
    assert set(report) == {"mode", "namespace", "started_at", "passed", "summary", "results"}
    assert (report["mode"], report["namespace"], report["passed"]) == ("l7", "default", True)
    assert report["summary"] == "9 of 9 checks passed (mode l7, namespace default)"
    first = report["results"][0]
    assert set(first) == {"name", "passed", "expected", "observed", "command", "evidence", "duration_s", "details"}
    assert first["name"] == "enrolment" and isinstance(first["command"], list)
    assert json.loads(report_file.read_text()) == report
    # Progress went to stderr, one start and one finish line per check.
    assert err.count("] PASS ") == 9 and "[1/9] enrolment ..." in err


def test_failing_check_exits_1_and_the_table_says_why(run, fx, healthy):
    cluster = healthy("l4-only")
    cluster.exec_answers[("default", "deploy/notsleep", "GET")] = fx.curl_page()
    code, out, err, _ = run(["--mode", "l4-only", "--context", "kind-lab", "--timeout", "3"], cluster)
    assert code == 1
    assert "FAIL    traffic: notsleep GET /productpage" in out
    assert "FAILED traffic: notsleep GET /productpage" in out
    assert "$ kubectl --context fake exec -n default deploy/notsleep -c notsleep -- curl" in out
    assert out.rstrip().endswith("7 of 8 checks passed (mode l4-only, namespace default); failed: traffic: notsleep "
                                 "GET /productpage")
    assert "] FAIL traffic: notsleep GET /productpage" in err


@pytest.mark.parametrize("as_json", [True, False])
def test_credentials_a_check_saw_are_redacted_in_the_output_and_the_report_file(run, fx, healthy, tmp_path, as_json):
    """A page or log line the checks quote may hold a key or a token: the table, the JSON, the progress and the
    report file (.lab/reports) show it redacted, and the JSON still parses."""
    cluster = healthy("l4-only")
    cluster.exec_answers[("default", "deploy/notsleep", "GET")] = fx.curl_page(body=realistic_secrets.ALL)
    report_file = tmp_path / "reports" / "l4-only.json"
    code, out, err, _ = run(["--mode", "l4-only", "--context", "kind-lab", "--timeout", "3", "--report-file",
                             str(report_file), *(["--json"] if as_json else [])], cluster)
    assert code == 1
    for text in (out, err, report_file.read_text()):
        realistic_secrets.assert_clean(text)
    assert "REDACTED" in report_file.read_text()
    json.loads(report_file.read_text())
    if as_json:
        assert json.loads(out)["passed"] is False


def test_unwritable_report_file_exits_2(run, fx, healthy, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err, _ = run(["--mode", "l7", "--context", "c", "--report-file", str(blocker / "r.json")],
                            healthy("l7"))
    assert code == 2 and "pass a writable --report-file path" in err
    assert "9 of 9 checks passed" in out  # the table is printed before the file is written


def test_module_entry_point_runs_without_a_traceback():
    result = subprocess.run([sys.executable, "-m", "verify", "--mode", "l7"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--kind-cluster NAME or --context CONTEXT" in result.stderr


@pytest.mark.parametrize("flag", ["--help"])
def test_help_exits_0(run, flag):
    code, _, _, _ = run([flag])
    assert code == 0


def test_addons_flag_adds_the_prometheus_and_kiali_checks(run, healthy):
    cluster = healthy("l7")
    code, out, err, opened = run(["--mode", "l7", "--context", "kind-lab", "--addons", "--json"], cluster)
    assert code == 0, err
    assert opened[0].addons is True
    report = json.loads(out)
    assert report["summary"] == "11 of 11 checks passed (mode l7, namespace default)"
    assert [result["name"] for result in report["results"]][-2:] == [
        "prometheus: mTLS connections from sleep", "kiali: graph edge sleep -> productpage"]
    assert "with the Prometheus and Kiali checks" in err.splitlines()[0]
    assert any(call[0] == "get_raw" for call in cluster.calls)


def test_kiali_login_flag_signs_in_to_kiali_instead_of_asking_anonymously(run, fx, healthy):
    cluster = healthy("l4-only")
    cluster.forward_answers = {"/kiali/api/authenticate": fx.kiali_login_answer,
                               "/kiali/api/namespaces/graph?": fx.kiali_graph_answer(fx.Graph.l4())}
    code, out, err, opened = run(["--mode", "l4-only", "--context", "x", "--addons", "--kiali-login", "--json"],
                                 cluster)
    assert code == 0, err
    assert opened[0].kiali_login is True
    assert any(call[0] == "create_token" for call in cluster.calls)
    assert fx.FAKE_TOKEN not in out and fx.FAKE_TOKEN not in err


def test_without_the_addons_flag_prometheus_and_kiali_are_left_alone(run, healthy):
    cluster = healthy("l4-only")
    code, out, _, opened = run(["--mode", "l4-only", "--context", "kind-lab"], cluster)
    assert code == 0 and opened[0].addons is False
    assert "prometheus:" not in out and "kiali:" not in out
    assert not any(call[0] == "get_raw" for call in cluster.calls)


def test_addons_failing_check_exits_1(run, fx, healthy):
    cluster = healthy("l4-only")
    cluster.raw_answers[fx.KIALI_PROXY] = fx.Graph.empty()
    code, out, _, _ = run(["--mode", "l4-only", "--context", "kind-lab", "--addons", "--timeout", "10"], cluster)
    assert code == 1
    assert out.rstrip().endswith("9 of 10 checks passed (mode l4-only, namespace default); failed: kiali: graph edge "
                                 "sleep -> productpage")
    assert "FAILED kiali: graph edge sleep -> productpage" in out


def test_a_long_check_report_prints_short_progress_lines(run, fx, healthy):
    """The progress is what the program's verification logs through pulumi-command, whose reader hangs on a line of
    64 KiB or more (issue #20): a check that quotes a huge page in what it observed still prints short lines."""
    from lab.logged_lines import SCANNER_LIMIT

    cluster = healthy("l4-only")
    # kubectl's error, quoted whole in what the check observed: one line of 340 KB, not all ASCII.
    dump = "error: unable to upgrade connection: " + "ñ ✓ container output " * 16_000

    def kubectl_fails():
        raise ClusterError(f"`kubectl exec -n default deploy/notsleep` failed: {dump}")

    cluster.exec_answers[("default", "deploy/notsleep", "GET")] = kubectl_fails
    code, out, err, _ = run(["--mode", "l4-only", "--context", "kind-lab", "--timeout", "3", "--json"], cluster)
    assert code == 1
    assert "] FAIL traffic: notsleep GET /productpage" in err
    assert max(len(line.encode()) for line in err.split("\n")) < SCANNER_LIMIT // 2
    assert dump in err.replace("\n", ""), "folded, not cut"
    assert json.loads(out)["passed"] is False  # the report on stdout is data: whole, not folded
