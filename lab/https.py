"""Every download the lab makes itself goes through here: https only, redirects included.

urllib follows a redirect from https to plain http by default; a downgrade there would let anyone on the path swap
what the lab fetches (and, for a trust-on-first-use file, its first digest with it).
"""

from __future__ import annotations

import urllib.error
import urllib.request


class _HttpsRedirectsOnly(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        if not newurl.startswith("https://"):
            raise urllib.error.URLError(f"refused a redirect to {newurl}, which is not https://")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpsRedirectsOnly)


def open_https(url: str, timeout: float):
    """urlopen for an https:// address whose redirects stay on https://."""
    if not url.startswith("https://"):
        raise urllib.error.URLError(f"{url} is not an https:// address")
    return _OPENER.open(url, timeout=timeout)
