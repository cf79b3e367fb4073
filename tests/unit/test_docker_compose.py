"""docker-compose.yml, the Dockerfile and the compose Prometheus config agree with the repo.

Static checks only (nothing is built or started): ``docker compose config`` accepts the
file, every host path it mounts from ``./deploy`` exists, Prometheus loads the committed
rules and scrapes the worker where the worker serves ``/metrics``, the worker's
environment is a valid :class:`stream.config.Settings`, and Grafana finds the dashboards
where its provider looks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from streamlearn.stream.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
PROMETHEUS_CONFIG = REPO / "deploy/prometheus/prometheus.compose.yml"
RULES_FILE = REPO / "deploy/prometheus/rules/streamlearn-alerts.yml"
DASHBOARD_PROVIDER = REPO / "deploy/grafana/provisioning/dashboards/streamlearn.yml"
DATASOURCES = REPO / "deploy/grafana/provisioning/datasources/prometheus.yml"
MODEL_KEY = "STREAMLEARN_MODEL_KEY"
DUMMY_KEY = "compose-config-check-not-a-real-key"
SECRETS = {MODEL_KEY}

_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` for these checks."""
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = env.get(name)
        if op in (":-", "-") and (current is None or (op == ":-" and current == "")):
            return arg
        if op in (":?", "?") and (current is None or (op == ":?" and current == "")):
            raise AssertionError(f"required variable {name}: {arg}")
        return current or ""

    return _VARIABLE.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as Compose would see it with no overrides but a model key."""
    return _interpolate(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")), {MODEL_KEY: DUMMY_KEY})


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    return yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume in short (``src:dst[:mode]``) or long syntax."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts.append((volume["source"], volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            mounts.append((source, target))
    return mounts


def _host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """The repository path a bind mount of ``service`` shows at ``container_path``."""
    wanted = PurePosixPath(container_path)
    for source, target in sorted(_mounts(service), key=lambda m: -len(m[1])):
        if source.startswith("./") and wanted.is_relative_to(target):
            return REPO / source / wanted.relative_to(target)
    return None


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _dockerfile_env() -> dict[str, str]:
    """``ENV`` keys of the Dockerfile's final stage (``KEY=value`` form)."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    final_stage = re.split(r"^FROM\s", text, flags=re.MULTILINE)[-1]
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.+)$", final_stage, flags=re.MULTILINE):
        env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def _assert_settings_fields(names: list[str]) -> None:
    """Each ``STREAMLEARN_A__B`` names a field path ``a.b`` of :class:`Settings`."""
    for name in names:
        assert name.startswith("STREAMLEARN_"), name
        model: Any = Settings
        for part in name.removeprefix("STREAMLEARN_").lower().split("__"):
            assert model is not None and part in model.model_fields, f"{name}: no field {part!r}"
            model = model.model_fields[part].annotation
            model = model if isinstance(model, type) and hasattr(model, "model_fields") else None


# --- docker compose itself ---------------------------------------------------------


def _compose_cli() -> list[str]:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker client is not installed: `docker compose config` not run")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        pytest.skip(
            "the docker client has no compose plugin (`docker compose version` failed): "
            "install docker-compose-plugin to run `docker compose config`"
        )
    return [docker, "compose", "-f", str(COMPOSE)]


def _compose_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    env.pop("COMPOSE_PROFILES", None)
    return {**env, **extra}


def test_docker_compose_config_is_valid() -> None:
    cli = _compose_cli()
    for profile in ([], ["--profile", "replay"]):
        result = subprocess.run(
            [*cli, *profile, "config", "--quiet"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            env=_compose_env(**{MODEL_KEY: DUMMY_KEY}),
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_refuses_to_start_without_the_model_key() -> None:
    result = subprocess.run(
        [*_compose_cli(), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env=_compose_env(),
    )
    assert result.returncode != 0
    assert MODEL_KEY in result.stderr


# --- the compose file --------------------------------------------------------------


def test_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {
        "kafka",
        "redis",
        "prometheus",
        "alertmanager",
        "alerts",
        "grafana",
        "worker",
        "replay",
        "api",
    }
    assert services["replay"]["profiles"] == ["replay"]
    assert services["worker"]["command"] == ["run"]
    assert services["worker"]["image"] == services["replay"]["image"]
    kafka = _environment(services["kafka"])
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "PLAINTEXT://kafka:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    for key, value in kafka.items():
        if key.endswith(("REPLICATION_FACTOR", "MIN_ISR")):
            assert value == "1", key
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_healthchecks_back_every_healthy_dependency(compose: dict[str, Any]) -> None:
    services = compose["services"]
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    for name in ("kafka", "redis", "prometheus", "alertmanager", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition.get("condition") == "service_healthy":
                target = services[dependency]
                has_check = "healthcheck" in target or (
                    target.get("build") and re.search(r"^HEALTHCHECK\s", dockerfile, re.M)
                )
                assert has_check, f"{name} waits for {dependency}, which has no healthcheck"


def test_mounted_deploy_paths_exist(compose: dict[str, Any]) -> None:
    checked = 0
    for name, service in compose["services"].items():
        for source, _ in _mounts(service):
            if source.startswith("./"):
                assert source.startswith("./deploy/"), f"{name} mounts {source}"
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
                checked += 1
    assert checked >= 6


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for source, _ in _mounts(service):
            if not source.startswith(("./", "/", "~")):
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_alertmanager_notifies_the_alerts_service_where_it_listens(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    (config,) = [src for src, dst in _mounts(services["alertmanager"]) if dst.endswith(".yml")]
    doc = yaml.safe_load((REPO / config).read_text())
    receiver = next(r for r in doc["receivers"] if r["name"] == doc["route"]["receiver"])
    url = receiver["webhook_configs"][0]["url"]
    command = services["alerts"]["command"]
    assert command[:2] == ["alerts", "serve"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert url == f"http://alerts:{command[command.index('--port') + 1]}/alerts"
    assert services["alerts"]["image"] == services["worker"]["image"]
    assert "healthz" in " ".join(services["alerts"]["healthcheck"]["test"])


# --- Prometheus --------------------------------------------------------------------


def test_prometheus_runs_the_compose_config(compose: dict[str, Any]) -> None:
    service = compose["services"]["prometheus"]
    flags = dict(arg.split("=", 1) for arg in service["command"] if "=" in arg)
    assert _host_path(service, flags["--config.file"]) == PROMETHEUS_CONFIG


def test_prometheus_rule_files_match_the_committed_rules(
    compose: dict[str, Any], prometheus: dict[str, Any]
) -> None:
    service = compose["services"]["prometheus"]
    found: set[Path] = set()
    for pattern in prometheus["rule_files"]:
        host = _host_path(service, pattern)
        assert host is not None, f"rule_files {pattern} is not under a mounted folder"
        found.update(p.resolve() for p in host.parent.glob(host.name))
    assert RULES_FILE.resolve() in found


def test_prometheus_scrapes_the_worker_where_it_serves_metrics(
    compose: dict[str, Any], prometheus: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = _settings_of(compose["services"]["worker"], monkeypatch)
    assert worker.metrics.host == "0.0.0.0"
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    (discovery,) = jobs["streamlearn"]["dns_sd_configs"]
    assert discovery["names"] == ["worker"] and discovery.get("type", "SRV") == "A"
    assert discovery["port"] == worker.metrics.port
    published = [str(p).rsplit(":", 1)[-1] for p in compose["services"]["worker"].get("ports", [])]
    assert set(published) <= {str(worker.metrics.port)}


# --- workers that scale (`docker compose up --scale worker=3`) ---------------------


def test_prometheus_finds_every_worker_replica_by_dns(prometheus: dict[str, Any]) -> None:
    """Docker's DNS answers a service name with every replica's address (type A): a
    static ``worker:9108`` target would scrape one replica, whichever DNS gave first."""
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert "static_configs" not in jobs["streamlearn"]
    assert [c["names"] for c in jobs["streamlearn"]["dns_sd_configs"]] == [["worker"]]


def test_worker_replicas_are_distinct_group_members(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "hostname" not in worker  # both block scaling
    settings = _settings_of(worker, monkeypatch)
    assert "{hostname}" in settings.worker.name
    names = {settings.worker.resolved_name(hostname=h) for h in ("3f9a1c2b7d4e", "8c0d2e6a1b5f")}
    assert len(names) == 2, "each container its own name"
    group = settings.kafka.group_id
    assert len({f"{group}-{name}" for name in names}) == 2, "each its own transactional id"


def test_worker_host_ports_do_not_collide_when_scaled(compose: dict[str, Any]) -> None:
    """A fixed host port takes one replica; a range gives each replica the next free one."""
    for port in compose["services"]["worker"].get("ports", []):
        host = str(port).split(":")[1]
        low, _, high = host.partition("-")
        assert high and int(high) - int(low) + 1 >= 3, f"{port}: a fixed host port"


def test_prometheus_alerts_to_the_alertmanager_service(
    compose: dict[str, Any], prometheus: dict[str, Any]
) -> None:
    targets = [
        t
        for am in prometheus["alerting"]["alertmanagers"]
        for sc in am["static_configs"]
        for t in sc["targets"]
    ]
    assert targets == ["alertmanager:9093"]
    alertmanager = compose["services"]["alertmanager"]
    assert any(str(p).endswith(":9093") for p in alertmanager["ports"])
    flags = dict(arg.split("=", 1) for arg in alertmanager["command"] if "=" in arg)
    assert _host_path(alertmanager, flags["--config.file"]) == (
        REPO / "deploy/alertmanager/alertmanager.compose.yml"
    )


def test_promtool_accepts_the_compose_config_with_its_rules(
    prometheus: dict[str, Any], tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({**prometheus, "rule_files": [str(RULES_FILE)]}))
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(RULES_FILE) in result.stdout  # the committed rules were checked too


# --- the worker's configuration ----------------------------------------------------


def _settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a container of ``service`` loads (image ENV, then compose env)."""
    for key in list(os.environ):
        if key.startswith("STREAMLEARN_"):
            monkeypatch.delenv(key)
    env = {**_dockerfile_env(), **_environment(service)}
    for key, value in env.items():
        if key.startswith("STREAMLEARN_") and key not in SECRETS:
            monkeypatch.setenv(key, value)
    return load_settings()


@pytest.mark.parametrize("name", ["worker", "replay", "api"])
def test_service_environment_is_valid_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    service = compose["services"][name]
    env = _environment(service)
    _assert_settings_fields([k for k in env if k.startswith("STREAMLEARN_") and k not in SECRETS])
    settings = _settings_of(service, monkeypatch)
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.redis.url == "redis://redis:6379/0"


def test_api_serves_on_its_published_port_and_prometheus_scrapes_it(
    compose: dict[str, Any], prometheus: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = compose["services"]["api"]
    settings = _settings_of(api, monkeypatch)
    assert api["command"] == ["serve"] and api["image"] == compose["services"]["worker"]["image"]
    assert settings.serve.host == "0.0.0.0"
    assert [str(p).rsplit(":", 1)[-1] for p in api["ports"]] == [str(settings.serve.port)]
    assert f":{settings.serve.port}/readyz" in " ".join(api["healthcheck"]["test"])
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    targets = [t for sc in jobs["streamlearn-api"]["static_configs"] for t in sc["targets"]]
    assert targets == [f"api:{settings.serve.port}"]


def test_worker_model_key_comes_from_the_host_environment() -> None:
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    value = raw["services"]["worker"]["environment"][MODEL_KEY]
    assert re.fullmatch(r"\$\{STREAMLEARN_MODEL_KEY:\?[^}]+\}", value), value


def test_dockerfile_environment_and_entrypoint() -> None:
    env = _dockerfile_env()
    _assert_settings_fields([k for k in env if k.startswith("STREAMLEARN_")])
    assert env["STREAMLEARN_METRICS__HOST"] == "0.0.0.0"
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(rf"^EXPOSE\s+{env['STREAMLEARN_METRICS__PORT']}\b", text, re.M)
    assert 'ENTRYPOINT ["streamlearn"]' in text
    assert 'CMD ["run"]' in text
    assert re.search(r"^USER\s+(?!root\b)\w+", text, re.M), "the image must not run as root"


# --- Grafana -----------------------------------------------------------------------


def test_grafana_dashboards_are_where_the_provider_looks(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    provider = yaml.safe_load(DASHBOARD_PROVIDER.read_text(encoding="utf-8"))
    (path,) = {p["options"]["path"] for p in provider["providers"]}
    assert _host_path(grafana, path) == REPO / "deploy/grafana/dashboards"
    assert list((REPO / "deploy/grafana/dashboards").glob("*.json"))
    for kind in ("datasources", "dashboards"):
        assert _host_path(grafana, f"/etc/grafana/provisioning/{kind}") == (
            REPO / "deploy/grafana/provisioning" / kind
        )
    env = _environment(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_grafana_datasource_is_the_prometheus_service(compose: dict[str, Any]) -> None:
    datasources = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    urls = {d["url"] for d in datasources if d["type"] == "prometheus"}
    assert urls == {"http://prometheus:9090"}
    assert any(str(p).endswith(":9090") for p in compose["services"]["prometheus"]["ports"])
