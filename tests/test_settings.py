"""Config reaches the program the way the pulumi CLI hands it over: the PULUMI_CONFIG environment variable."""

import json

import pulumi
import pytest

from components.settings import read_lab_config


@pytest.fixture
def empty_runtime_config():
    saved = dict(pulumi.runtime.config.CONFIG.get())
    pulumi.runtime.set_all_config({})
    yield
    pulumi.runtime.set_all_config(saved)


def test_config_from_the_language_hosts_environment(monkeypatch, empty_runtime_config):
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({
        "istio-ambient-lab:meshMode": "l7", "istio-ambient-lab:workers": "3", "aws:region": "eu-west-1",
    }))
    cfg = read_lab_config()
    assert cfg.mesh_mode == "l7" and cfg.workers == 3


def test_a_bad_value_from_the_environment_is_a_sentence(monkeypatch, empty_runtime_config):
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"istio-ambient-lab:target": "docker"}))
    with pytest.raises(pulumi.RunError) as caught:
        read_lab_config()
    assert str(caught.value) == "istio-ambient-lab:target is 'docker', but it must be one of: kind, existing."
