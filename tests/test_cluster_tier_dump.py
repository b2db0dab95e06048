"""The cluster tier's object dump (tests/cluster/cluster.py), which test 5 compares before `up` and after
`destroy`: what it leaves out must be only what changes by itself, never what the lab writes."""

from tests.cluster import cluster


def _object(kind: str, **metadata) -> dict:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": "n", "resourceVersion": "1",
                                                           "managedFields": [{"time": "t1"}], **metadata},
            "spec": {"a": 1}, "status": {"conditions": [{"lastHeartbeatTime": "t1"}]}}


def test_the_dump_ignores_what_any_writer_changes_and_keeps_what_the_lab_writes():
    node = _object("Node", labels={"x": "1"})
    later = _object("Node", labels={"x": "1"}, resourceVersion="9", managedFields=[{"time": "t2"}])
    later["status"] = {"conditions": [{"lastHeartbeatTime": "t2"}]}
    assert cluster._normalized(node) == cluster._normalized(later)
    relabelled = _object("Node", labels={"x": "1", "istio.io/dataplane-mode": "ambient"})
    assert cluster._normalized(node) != cluster._normalized(relabelled)
    # Status is left out of Nodes alone (kwok's heartbeats): anyone else's status stays compared.
    configmap, written = _object("ConfigMap"), _object("ConfigMap")
    written["status"] = {"conditions": []}
    assert cluster._normalized(configmap) != cluster._normalized(written)
    assert "resourceVersion" in node["metadata"]  # the dump's copy is normalized, not the object it was given


def test_the_difference_names_what_was_added_removed_and_changed():
    before = {"a": {"v": 1}, "b": {"v": 1}, "c": {"v": 1}}
    after = {"a": {"v": 1}, "b": {"v": 2}, "d": {"v": 1}}
    assert cluster.dump_difference(before, after) == {"added": ["d"], "removed": ["c"], "changed": ["b"]}


def test_only_types_that_change_by_themselves_are_left_out_and_each_says_why():
    assert set(cluster.UNDUMPED_TYPES) == {"events", "events.events.k8s.io", "leases.coordination.k8s.io",
                                           "leasecandidates.coordination.k8s.io", "componentstatuses"}
    assert all(reason for reason in cluster.UNDUMPED_TYPES.values())
