"""Every temporary file or folder the lab and verify make in the system's temp folder has a name the end-to-end
leftover check knows (tests/e2e LEFTOVER_PREFIXES): a kubeconfig under any other name could outlive a run unseen,
and a kubectl reading it would escape the check for stray port-forwards."""

import ast
from pathlib import Path

from tests.e2e import LEFTOVER_PREFIXES
from tests.harness import ROOT

_MAKERS = {"mkstemp", "mkdtemp", "TemporaryDirectory", "NamedTemporaryFile"}


def _temporary_prefixes() -> list[tuple[str, str, str]]:
    """(where, prefix, suffix) of every call that makes a temporary file or folder; a prefix that is not a plain
    string is reported as such, so the check below cannot be dodged by computing one."""
    found = []
    for folder in ("lab", "verify"):
        for path in sorted(Path(ROOT, folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
                        in _MAKERS):
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                prefix = next((k.value for k in node.keywords if k.arg == "prefix"), None)
                suffix = next((k.value.value for k in node.keywords if k.arg == "suffix"
                               and isinstance(k.value, ast.Constant)), "")
                if isinstance(prefix, ast.JoinedStr) and isinstance(prefix.values[0], ast.Constant) and str(
                        prefix.values[0].value).startswith("."):
                    continue  # a hidden partial file in its own private folder (lab.private, lab.bootstrap)
                found.append((where, prefix.value if isinstance(prefix, ast.Constant) else ast.dump(prefix)
                              if prefix else "no prefix", suffix))
    return found


def test_every_temporary_name_is_one_the_leftover_check_knows():
    found = _temporary_prefixes()
    assert len(found) >= 5, found  # the scan sees the kubeconfigs of kind, diagnostics and verify, and more
    assert [(where, prefix) for where, prefix, _ in found if not str(prefix).startswith(LEFTOVER_PREFIXES)] == []


def test_temporary_kubeconfigs_share_the_name_the_stray_kubectl_check_looks_for():
    """verify's and the dashboard's kubectl (port-forwards included) read theirs: pgrep must find them by name."""
    kubeconfigs = [(where, prefix) for where, prefix, suffix in _temporary_prefixes()
                   if suffix in (".yaml", ".kubeconfig")]
    assert {where.split("/")[0] for where, _ in kubeconfigs} == {"lab", "verify"}
    assert [(where, prefix) for where, prefix in kubeconfigs if prefix != "lab-kubeconfig-"] == []
