"""One rule for what must never appear in plain text: in stack state, stack outputs, or anything the lab prints or
writes (CLI output and errors, verify reports, diagnostics).

`find_leaks` says whether text holds something that looks like a credential; `redact` replaces just the secret part
with `REDACTED`, so output shown to the user keeps its shape (`http://user:REDACTED@proxy:3128`) and stays useful.
The shapes are those real credentials take on a lab machine: PEM private keys (plain, base64-encoded as kubeconfig's
`client-key-data`, wrapped at 76 columns as `base64` prints it, or JSON-escaped inside a GCP service-account key),
JSON key fields (`"refresh-token"` as kubectl spells them too), bearer and basic `Authorization` headers and token
headers such as `X-Auth-Token`, Kubernetes service-account JWTs, kubeconfig `token:` and `password:` fields, a pod's
environment entry (`name: DB_PASSWORD` then `value: ...`), `curl -u user:password`, and passwords in URLs
(`HTTP_PROXY=http://user:pass@proxy` in `docker inspect` or an environment dump). A secret with no shape of its own
(the passphrase, Kiali's signing key) is found only when the caller passes it as a known secret.

Used by the unit tests on what the program registers, by the end-to-end and engine tests on the exported state and
the captured `pulumi up` output, and by the lab itself before it prints or writes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

REDACTED = "REDACTED"  # itself matches no rule, so redacted text is clean


def _is_base64_private_key(encoded: str) -> bool:
    """Certificates are base64 PEM too (`certificate-authority-data`) and public: only a key counts."""
    # The armour is in the first line: decode whole quanta of it, whatever follows (line breaks, a cut-off tail).
    head = re.split(r"\s|\\n", encoded, maxsplit=1)[0]
    head = head[: len(head.rstrip("=")) // 4 * 4]
    try:
        decoded = base64.b64decode(head)
    except (binascii.Error, ValueError):
        return False
    return b"PRIVATE KEY-----" in decoded


@dataclass(frozen=True)
class _Rule:
    name: str
    pattern: re.Pattern[str]
    confirm: Callable[[str], bool] = lambda secret: True  # a second look at a match the pattern alone cannot judge

    def secrets(self, text: str) -> Iterable[re.Match[str]]:
        """The matches whose `secret` group is a credential."""
        return (m for m in self.pattern.finditer(text)
                if m.group("secret") not in ("", "null", "~", REDACTED) and self.confirm(m.group("secret")))


# Field names whose value is a credential: kubeconfig (`token`, `password`, `client-key-data`, auth-provider's
# `client-secret`, `id-token`, `refresh-token`, `access-token`), cloud and service-account JSON (`private_key`,
# `client_secret`, ...), Docker's config.json (`auth`).
_YAML_FIELDS = r"token|password|client-key-data|client-secret|id-token|refresh-token|access-token"
_JSON_FIELDS = (r"private_key|private_key_id|client_secret|refresh_token|access_token|id_token|token|password|"
                r"client-key-data|client-secret|id-token|refresh-token|access-token|auth|identitytoken|"
                r"IdentityToken|registrytoken")
# Environment variable names whose value is a credential (a pod's `env`, an environment dump).
_SECRET_NAME = r"[A-Za-z0-9_]*(?:SECRET_ACCESS_KEY|_SECRET|PASSWORD|_PASSPHRASE|_TOKEN|_API_KEY)"
_LINE_BREAK = r"(?:\r?\n|\\n)"  # a real line break, or one JSON-escaped inside a state file

_PEM_BODY = r"[A-Za-z0-9+/=\s\\:,-]"  # base64, line breaks (real or \n), and headers like DEK-Info: AES-128-CBC,...

_RULES = (
    # A PEM private key, with real or JSON-escaped (\n) line breaks; the body goes, the armour stays. A key cut
    # short (a truncated log line) ends at the first character no key has, a quote say, so JSON stays JSON.
    _Rule("a PEM private key", re.compile(
        rf"-----BEGIN (?P<kind>[A-Z0-9 ]*)PRIVATE KEY-----(?P<secret>{_PEM_BODY}*?)"
        rf"(?:-----END (?P=kind)PRIVATE KEY-----|(?!{_PEM_BODY}))")),
    # base64 of "-----BEGIN ": kubeconfig's client-key-data, a Secret's data, wherever it was copied.
    # `base64` wraps at 76 columns (openssl at 64): the lines after the first go too, each a whole line of base64.
    _Rule("a base64-encoded PEM private key", re.compile(
        rf"(?P<secret>LS0tLS1CRUdJTi[A-Za-z0-9+/]*={{0,2}}(?:{_LINE_BREAK}[A-Za-z0-9+/]+={{0,2}}(?![^\s\\\"']))*)"),
          confirm=_is_base64_private_key),
    _Rule("a JSON credential field", re.compile(
        rf'"(?:{_JSON_FIELDS})"\s*:\s*"(?P<secret>(?:[^"\\]|\\.)+)"')),
    # YAML (a kubeconfig), or the same text JSON-escaped inside a state file: the value ends at a quote or a `\`.
    # The field starts a line (or a JSON-escaped line, after `\n`), so prose such as "asks for a token: the one
    # below" is not a credential.
    _Rule("a kubeconfig credential field", re.compile(
        rf"(?m)(?:^|\\n)[ \t-]*(?:{_YAML_FIELDS})[ \t]*:[ \t]*(?:\\?[\"'])?(?P<secret>[^\s\"',}}\\]+)")),
    # A container's environment entry, in YAML (`kubectl get -o yaml`) or JSON: the name says what the value is.
    _Rule("a credential in a pod's environment", re.compile(
        rf"(?mi)(?:^|\\n)[ \t-]*name[ \t]*:[ \t]*(?:\\?[\"'])?{_SECRET_NAME}(?:\\?[\"'])?[ \t]*{_LINE_BREAK}"
        rf"[ \t]*value[ \t]*:[ \t]*(?:\\?[\"'])?(?P<secret>[^\s\"',}}\\]+)")),
    _Rule("a credential in a pod's environment (JSON)", re.compile(
        rf'(?i)"name"\s*:\s*"{_SECRET_NAME}"\s*,\s*"value"\s*:\s*"(?P<secret>(?:[^"\\]|\\.)+)"')),
    # On a command line: `--token=...`, `--password ...` (kubectl, docker login).
    _Rule("a credential option", re.compile(r"(?<![\w-])--(?:token|password)(?:=|[ \t]+)(?P<secret>[^\s\"']+)")),
    # In an environment dump (`docker inspect`, `env`): AWS_SECRET_ACCESS_KEY=..., *_TOKEN=..., *_PASSWORD=...
    _Rule("a credential in an environment variable", re.compile(
        r"(?i)\b[A-Z0-9_]*(?:SECRET_ACCESS_KEY|_SECRET|_PASSWORD|_PASSPHRASE|_TOKEN)[\"']?[ \t]*[=:][ \t]*[\"']?"
        r"(?P<secret>[^\s\"',]+)")),
    # curl's `-u user:password` (also `--user`, `-U`/`--proxy-user`, and short options run together: `-su`).
    _Rule("a password in a curl option", re.compile(
        r"\bcurl\b[^\n]*?(?<![\w-])(?:-[A-Za-z]*[uU][ \t]*|--(?:proxy-)?user(?:=|[ \t]+))[\"']?[^\s:\"'-][^\s:\"']*:"
        r"(?P<secret>[^\s\"']+)")),
    # Token headers: X-Auth-Token (OpenStack, registries), X-Vault-Token, GitLab's Private-Token, X-API-Key.
    _Rule("a token header", re.compile(
        r"(?i)(?<![\w-])(?:x-[a-z0-9-]*-token|private-token|x-api-key)[\"']?[ \t]*[:=][ \t]*[\"']?"
        r"(?P<secret>[^\s\"',;]+)")),
    _Rule("an Authorization header", re.compile(
        r"(?i)\bauthorization[\"']?[ \t]*[:=][ \t]*[\"']?(?:bearer|basic)[ \t]+(?P<secret>[A-Za-z0-9._~+/-]+=*)")),
    # A bearer token on its own (curl -H, a log line): long, so the English word "bearer" is not one.
    _Rule("a bearer token", re.compile(r"(?i)\bbearer[ \t]+(?P<secret>[A-Za-z0-9._~+/-]{20,}=*)")),
    _Rule("a JSON web token (a service-account token)", re.compile(
        r"(?P<secret>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})")),
    # scheme://user:password@host: the password goes, the user and host stay (they say which proxy it was).
    # The password runs to the last `@` of the authority: it may hold an `@` itself.
    _Rule("a password in a URL", re.compile(
        r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@\"']+:(?P<secret>[^\s/\"']+)@")),
)


def find_leaks(text: str, known_secrets: Iterable[str] = ()) -> list[str]:
    """What in `text` looks like a credential, or equals one of `known_secrets` (a passphrase, say).

    Returns:
        A description of each kind of leak found; empty when the text is clean. The secret itself is never repeated.
    """
    found = [f"text holding {rule.name}" for rule in _RULES if any(rule.secrets(text))]
    found += [f"a known secret ({len(secret)} characters)" for secret in known_secrets if secret and secret in text]
    return found


def redact(text: str, known_secrets: Iterable[str] = ()) -> str:
    """`text` with the secret part of every leak `find_leaks` would report replaced by REDACTED."""
    for secret in known_secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    for rule in _RULES:
        spans = [match.span("secret") for match in rule.secrets(text)]
        for start, end in reversed(spans):  # from the end, so earlier offsets stay right
            text = text[:start] + REDACTED + text[end:]
    return text
