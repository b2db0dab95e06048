"""Every object the lab authors, as the program registers it, checked against a schema.

Core objects against the Kubernetes OpenAPI schema of the pinned Kubernetes version (kubernetes-validate, strict: an
unknown or misspelt field fails). Gateway API and Istio objects against schemas written here from their documented
API (Gateway API v1 reference, istio.io security reference), closed to unknown fields for the same reason.
"""

import jsonschema
import kubernetes_validate
import pytest

from lab import catalog
from tests.harness import STACKS

KUBERNETES_VERSION = "1.36.0"
assert KUBERNETES_VERSION.startswith(catalog.KIND_NODE_IMAGE.split(":v", 1)[1][:4])

CORE_KINDS = {
    "kubernetes:core/v1:Namespace": None,
    "kubernetes:core/v1:NamespacePatch": "Namespace",
    "kubernetes:core/v1:Service": None,
    "kubernetes:core/v1:ServicePatch": "Service",
    "kubernetes:core/v1:ServiceAccount": None,
    "kubernetes:apps/v1:Deployment": None,
    "kubernetes:batch/v1:CronJob": None,
    "kubernetes:networking.k8s.io/v1:NetworkPolicy": None,  # Kiali's and Prometheus', on an existing cluster
    "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole": None,  # Prometheus' reader, on an existing cluster
}

NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "additionalProperties": False,
    "properties": {
        "name": NAME, "namespace": NAME,
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}


def closed(properties, required=()):
    return {"type": "object", "additionalProperties": False, "required": list(required), "properties": properties}


GATEWAY = closed({
    "gatewayClassName": NAME,
    "listeners": {"type": "array", "minItems": 1, "items": closed({
        "name": NAME, "port": PORT,
        # Gateway API: a core protocol name or a domain-prefixed one; Istio's HBONE is accepted by its controller.
        "protocol": {"enum": ["HTTP", "HTTPS", "TLS", "TCP", "UDP", "HBONE"]},
        "allowedRoutes": closed({"namespaces": closed({"from": {"enum": ["All", "Same", "Selector"]}})}),
    }, required=["name", "port", "protocol"])},
}, required=["gatewayClassName", "listeners"])

HTTP_ROUTE = closed({
    "parentRefs": {"type": "array", "items": closed({"name": NAME}, required=["name"])},
    "rules": {"type": "array", "items": closed({
        "matches": {"type": "array", "maxItems": 64, "items": closed({"path": closed({
            "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
            "value": {"type": "string", "pattern": "^/"},
        }, required=["type", "value"])})},
        "backendRefs": {"type": "array", "items": closed({"name": NAME, "port": PORT}, required=["name", "port"])},
    })},
}, required=["parentRefs", "rules"])

PRINCIPALS = {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^[^/]+/ns/[^/]+/sa/[^/]+$"}}
AUTHORIZATION_POLICY = {
    **closed({
        "selector": closed({"matchLabels": {"type": "object"}}, required=["matchLabels"]),
        "targetRefs": {"type": "array", "maxItems": 16, "items": closed(
            {"group": {"type": "string"}, "kind": {"type": "string"}, "name": NAME}, required=["kind", "name"])},
        "action": {"enum": ["ALLOW", "DENY", "AUDIT", "CUSTOM"]},
        "rules": {"type": "array", "items": closed({
            "from": {"type": "array", "items": closed({"source": closed({"principals": PRINCIPALS})})},
            "to": {"type": "array", "items": closed({"operation": closed({
                "methods": {"type": "array", "items": {"enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]}},
            })})},
        })},
    }),
    # Istio allows only one of selector, targetRef and targetRefs.
    "not": {"required": ["selector", "targetRefs"]},
}
PEER_AUTHENTICATION = closed({"mtls": closed({"mode": {"enum": ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]}})})

CUSTOM_SCHEMAS = {
    "kubernetes:gateway.networking.k8s.io/v1:Gateway": GATEWAY,
    "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute": HTTP_ROUTE,
    "kubernetes:security.istio.io/v1:AuthorizationPolicy": AUTHORIZATION_POLICY,
    "kubernetes:security.istio.io/v1:PeerAuthentication": PEER_AUTHENTICATION,
}


def whole_numbers(value):
    """Mocks hand numbers back as floats; Kubernetes wants integers where they are whole."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    return value


def manifest(resource, kind=None):
    body = whole_numbers(dict(resource.inputs))
    if kind:
        body["kind"] = kind
    return body


@pytest.mark.parametrize("stack", STACKS)
def test_core_objects_match_the_kubernetes_schema(runs, stack):
    checked = 0
    for resource in runs[stack].kubernetes():
        if resource.type in CORE_KINDS:
            body = manifest(resource, CORE_KINDS[resource.type])
            kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
            checked += 1
    assert checked >= 25


def test_an_existing_clusters_own_objects_match_the_kubernetes_schema(existing_run):
    """What only an existing cluster gets (the addons' NetworkPolicies, STRICT per namespace) is held to the same
    schemas."""
    checked = set()
    for resource in existing_run.kubernetes():
        if resource.type in CORE_KINDS:
            kubernetes_validate.validate(manifest(resource, CORE_KINDS[resource.type]), KUBERNETES_VERSION, strict=True)
            checked.add(resource.type)
        if resource.type in CUSTOM_SCHEMAS:
            body = manifest(resource)
            jsonschema.validate(body["spec"], CUSTOM_SCHEMAS[resource.type])
            jsonschema.validate(body["metadata"], METADATA)
            checked.add(resource.type)
    assert {"kubernetes:networking.k8s.io/v1:NetworkPolicy", "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole",
            "kubernetes:security.istio.io/v1:PeerAuthentication"} <= checked


@pytest.mark.parametrize("stack", STACKS)
def test_gateway_api_and_istio_objects_match_their_documented_shapes(runs, stack):
    seen = set()
    for resource in runs[stack].kubernetes():
        if resource.type in CUSTOM_SCHEMAS:
            body = manifest(resource)
            jsonschema.validate(body["spec"], CUSTOM_SCHEMAS[resource.type])
            jsonschema.validate(body["metadata"], METADATA)
            group_version = resource.type.split(":")[1]
            assert body["apiVersion"] == group_version and body["kind"] == resource.type.rsplit(":", 1)[1]
            seen.add(resource.type)
    assert seen == set(CUSTOM_SCHEMAS)


def test_the_schemas_catch_mistakes():
    """The checks above can fail: a misspelt field, a bad enum, selector plus targetRefs."""
    bad_deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                      "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                               "template": {"spec": {"containers": [{"name": "c", "imagee": "x"}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad_deployment, KUBERNETES_VERSION, strict=True)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"mtls": {"mode": "STRIKT"}}, PEER_AUTHENTICATION)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"selector": {"matchLabels": {}}, "targetRefs": [{"kind": "Service", "name": "p"}]},
                            AUTHORIZATION_POLICY)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"gatewayClassName": "istio", "listeners": [{"name": "m", "port": 15008,
                                                                         "protocol": "HBONE", "tls": {}}]}, GATEWAY)
