"""Fixtures for the cluster tests that need real ssh.

* ``sshd`` (session): one running :class:`~tests.cluster._sshd.Sshd`; aliases ``node1`` …
  ``node4`` reach it, ``nodedown`` is refused.
* ``ssh_env`` (function): the same server, with ``UNIDIST_SSH_OPTIONS`` set to its
  ``-F config`` for this test (child processes and CLI runs inherit it).
* :func:`write_cluster_file` / ``ssh_cluster_file``: a cluster file listing those hosts.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster._sshd import DOWN, HOSTS, Sshd

CLUSTER_TEXT = (
    "GROUP:nodes\n"
    + "".join(f"{h}\n" for h in HOSTS)
    + "GROUP:pair\n"
    + f"{HOSTS[0]}\n{HOSTS[1]}\n"
    + "GROUP:down\n"
    + f"{DOWN}\n"
    + "LUMP:mixed\nnodes\ndown\n"
)


def write_cluster_file(path: Path) -> Path:
    """Write a cluster file with groups ``nodes`` (node1..node4), ``pair`` (node1, node2),
    ``down`` (nodedown) and the lump ``mixed`` (nodes + down); return ``path``."""
    path.write_text(CLUSTER_TEXT)
    return path


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    """A real sshd on a loopback port for the whole session (stopped at the end)."""
    with Sshd() as server:
        yield server


@pytest.fixture
def ssh_env(sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> Sshd:
    """The session sshd with ``$UNIDIST_SSH_OPTIONS`` pointing ssh/scp at its config."""
    monkeypatch.setenv("UNIDIST_SSH_OPTIONS", shlex.join(sshd.ssh_options))
    return sshd


@pytest.fixture
def ssh_cluster_file(tmp_path: Path) -> Path:
    """A cluster file of the sshd's hosts (see :func:`write_cluster_file`)."""
    return write_cluster_file(tmp_path / "cluster")
