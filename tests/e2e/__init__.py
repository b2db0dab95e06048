"""End-to-end tests against real kind clusters (see test_lifecycle.py)."""

# What the lab may leave in the system's temp folder while it runs, by name prefix: temporary kubeconfigs (kind,
# diagnostics, verify, dashboard), kind's scratch folders and the image archives. After a test, none may remain, and
# no process may still read a lab-kubeconfig-* file. tests/test_temporary_files.py holds every temporary file the
# code makes to this list, so a new prefix cannot slip past the leftover check.
LEFTOVER_PREFIXES = ("lab-kubeconfig-", "lab-kind-", "lab-images-")
