"""The Dockerfile and docker-compose.cluster.yml, checked by reading (no Docker engine on CI machines):
every compose service's environment must be a valid `raftqueue serve` configuration."""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from raftqueue.config import add_serve_arguments, config_from_args

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())


def test_compose_runs_three_nodes_with_a_volume_and_port_each():
    compose = _compose()
    services = compose["services"]
    assert sorted(services) == ["node1", "node2", "node3"]
    ports = sorted(svc["ports"][0] for svc in services.values())
    assert ports == ["8081:8081", "8082:8081", "8083:8081"]
    volumes = {svc["volumes"][0].split(":")[0] for svc in services.values()}
    assert volumes == {"node1-data", "node2-data", "node3-data"} == set(compose["volumes"])
    for name, svc in services.items():
        assert svc["hostname"] == name and svc["build"] == "." and svc["restart"] == "unless-stopped"


def test_every_service_environment_is_a_valid_node_config(monkeypatch):
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    seen = set()
    for name, svc in _compose()["services"].items():
        env = dict(svc["environment"])
        assert "RAFTQUEUE_CLUSTER_SECRET" in env and env["RAFTQUEUE_CLUSTER_SECRET"].startswith("${")
        assert "RAFTQUEUE_ADMIN_KEY" in env and env["RAFTQUEUE_ADMIN_KEY"].startswith("${")
        given = {"RAFTQUEUE_CLUSTER_SECRET": "s3cret", "RAFTQUEUE_ADMIN_KEY": "a" * 48}
        for key, value in env.items():
            monkeypatch.setenv(key, given.get(key, str(value)))
        config = config_from_args(parser.parse_args([]))
        seen.add(config.node_id)
        assert (config.http_host, config.http_port) == ("0.0.0.0", 8081)
        assert config.raft_bind == "0.0.0.0:9081" and config.cluster_secret == "s3cret"
        assert [m.raft_addr for m in config.members] == ["node1:9081", "node2:9081", "node3:9081"]
        me = next(m for m in config.members if m.id == config.node_id)
        assert me.raft_addr == f"{name}:9081" and me.http_addr == f"http://{name}:8081"
    assert seen == {"n1", "n2", "n3"}


def test_dockerfile_installs_the_package_and_serves_with_the_same_ports():
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11" in text
    assert "pip install ." in text
    assert 'ENTRYPOINT ["raftqueue"]' in text and 'CMD ["serve"]' in text
    assert "RAFTQUEUE_HTTP_ADDR=0.0.0.0:8081" in text and "RAFTQUEUE_RAFT_BIND=0.0.0.0:9081" in text
    assert "RAFTQUEUE_DATA_DIR=/data" in text and 'VOLUME ["/data"]' in text
    assert "USER raftqueue" in text  # not root
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "data" in ignored


def _exposed_metric_names() -> set[str]:
    """Every series name /metrics can emit, read from the metrics module (with the suffixes Prometheus adds)."""
    import re
    source = (ROOT / "raftqueue/api/metrics.py").read_text()
    base = set(re.findall(r'"(raftqueue_[a-z_]+)"', source))
    base |= {f"raftqueue_jobs_{name}" for name in re.findall(r'"[a-z]+": "([a-z]+)"', source)}
    names = set()
    for name in base:
        names |= {name, f"{name}_total", f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_grafana_dashboard_and_scrape_config_use_metrics_that_exist():
    import json
    import re
    dashboard = json.loads((ROOT / "deploy/grafana-dashboard.json").read_text())
    exposed = _exposed_metric_names()
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"raftqueue_[a-z_]+", target["expr"]))
    assert used and not (used - exposed), sorted(used - exposed)
    scrape = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    job = scrape["scrape_configs"][0]
    services = _compose()["services"]
    assert job["metrics_path"] == "/metrics"
    assert sorted(t.split(":")[0] for t in job["static_configs"][0]["targets"]) == sorted(services)
