"""Credentials shaped like the real ones a lab machine holds, for the leak tests of every channel.

Each sample is text a channel could carry (a kubeconfig, a service-account key file, an HTTP request, `docker
inspect` output); `SECRETS` are the parts that must never reach a user or a file in plain text.
"""

from __future__ import annotations

import base64
import json
import textwrap

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def _pem_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def _b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


PEM_KEY = _pem_key()
PEM_BODY = PEM_KEY.splitlines()[1]  # a line of the key itself
KEY_DATA = base64.b64encode(PEM_KEY.encode()).decode()  # kubeconfig's client-key-data
CERT_DATA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
GCP_KEY_BODY = _pem_key().splitlines()[2]
SERVICE_ACCOUNT_JSON = json.dumps({
    "type": "service_account", "project_id": "lab-1234", "private_key_id": "8f1c0d5e2b7a4c9d8e7f6a5b4c3d2e1f0a9b8c7d",
    "private_key": f"-----BEGIN PRIVATE KEY-----\n{GCP_KEY_BODY}\n-----END PRIVATE KEY-----\n",
    "client_email": "lab@lab-1234.iam.gserviceaccount.com",
}, indent=2)
JWT = ".".join([_b64url({"alg": "RS256", "kid": "x0Yt1kq3"}),
                _b64url({"iss": "https://kubernetes.default.svc.cluster.local",
                         "sub": "system:serviceaccount:default:sleep"}),
                "c2lnbmF0dXJlLW9mLXRoZS1hcGktc2VydmVy"])
STATIC_TOKEN = "k8s-static-token-7f3a9c2e1b"
PASSWORD = "Sup3r-s3cret!"
PROXY_PASSWORD = "pr0xy-Pa55"
BASIC = base64.b64encode(b"admin:" + PASSWORD.encode()).decode()

KUBECONFIG = f"""apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {CERT_DATA}
    server: https://127.0.0.1:6443
  name: kind-lab
users:
- name: kind-lab
  user:
    client-certificate-data: {CERT_DATA}
    client-key-data: {KEY_DATA}
- name: static
  user:
    token: {STATIC_TOKEN}
- name: basic
  user:
    username: admin
    password: "{PASSWORD}"
"""

# `base64 client.key` as coreutils prints it, wrapped at 76 columns; its later lines are key material too.
WRAPPED_KEY_DATA = "\n".join(textwrap.wrap(KEY_DATA, 76))
WRAPPED_KEY_TAIL = WRAPPED_KEY_DATA.splitlines()[-2]
DB_PASSWORD = "pg-Hunter2-9f1c"
# `kubectl config view --raw -o json` of an OIDC user: kubectl keeps the kubeconfig's hyphenated keys.
OIDC_REFRESH_TOKEN = "1//0gXk9-oidc-refresh-7Hq2"
OIDC_CLIENT_SECRET = "oidc-client-s3cret-4b2d"
CURL_PASSWORD = "cUrl-pa55-word"
AUTH_TOKEN = "gAAAAABm-x-auth-token-3e9c1a"

SAMPLES = {
    "a PEM key": PEM_KEY,
    "a kubeconfig": KUBECONFIG,
    "a kubeconfig inside JSON (the state)": json.dumps({"kubeconfig": KUBECONFIG}),
    "a GCP service-account key": SERVICE_ACCOUNT_JSON,
    "a bearer header": f"GET /api/v1/namespaces HTTP/1.1\nAuthorization: Bearer {JWT}\n",
    "a basic header": f"curl -H 'Authorization: Basic {BASIC}' https://127.0.0.1:6443",
    "a service-account token on its own": f"mounted token {JWT} from /var/run/secrets",
    "docker inspect with a proxy": json.dumps([{"Config": {"Env": [
        f"HTTP_PROXY=http://lab:{PROXY_PASSWORD}@proxy.corp:3128",
        f"https_proxy=http://lab:{PROXY_PASSWORD}@proxy.corp:3128", "NO_PROXY=localhost"]}}], indent=2),
    "a key as base64 prints it": f"$ base64 client.key\n{WRAPPED_KEY_DATA}\n$ ",
    "a pod's environment in YAML": (
        "    env:\n    - name: POSTGRES_USER\n      value: bookinfo\n    - name: POSTGRES_PASSWORD\n"
        f"      value: {DB_PASSWORD}\n    - name: PGDATA\n      value: /var/lib/postgresql/data\n"),
    "a pod's environment in JSON": json.dumps({"env": [{"name": "POSTGRES_USER", "value": "bookinfo"},
                                                       {"name": "POSTGRES_PASSWORD", "value": DB_PASSWORD}]}),
    "an OIDC user in kubectl's JSON": json.dumps({"users": [{"name": "oidc", "user": {"auth-provider": {
        "name": "oidc", "config": {"client-id": "lab", "client-secret": OIDC_CLIENT_SECRET, "id-token": JWT,
                                   "idp-issuer-url": "https://dex.corp", "refresh-token": OIDC_REFRESH_TOKEN}}}}]},
        indent=2),
    "curl with a user and password": f"+ curl -sSf -u admin:{CURL_PASSWORD} https://registry.corp/v2/_catalog",
    "an X-Auth-Token header": f"curl -H 'X-Auth-Token: {AUTH_TOKEN}' https://swift.corp/v1/AUTH_lab",
}
SECRETS = [PEM_BODY, KEY_DATA, GCP_KEY_BODY, JWT, STATIC_TOKEN, PASSWORD, PROXY_PASSWORD, BASIC, WRAPPED_KEY_TAIL,
           DB_PASSWORD, OIDC_REFRESH_TOKEN, OIDC_CLIENT_SECRET, CURL_PASSWORD, AUTH_TOKEN]
ALL = "\n".join(SAMPLES.values())  # every shape at once, for the channel tests


def assert_clean(text: str) -> None:
    """No credential in `text`, by the rule and by the literal secrets above."""
    from lab.leaks import find_leaks

    assert find_leaks(text, SECRETS) == [], text
