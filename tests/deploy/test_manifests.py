"""The deployment files, checked offline (no container engine here): they parse,
carry the fields their tools require, and agree with each other and with the CLI
(every job argument is a flag of pipelines/main.py, every command a `flowrec` command)."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml

from flowrec import cli
from pipelines.main import add_job_arguments

REPO = Path(__file__).resolve().parent.parent.parent
DEPLOY = REPO / "deploy"
IMAGE_ROOT = PurePosixPath("/opt/flowrec")  # where deploy/Dockerfile puts the checkout
VENV_PYTHON = "/opt/flowrec/.venv/bin/python"


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def flink_version(pyproject) -> str:
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("apache-flink==")]
    assert len(pins) == 1, "apache-flink is pinned exactly once"
    return pins[0].split("==", 1)[1]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def deployment() -> dict:
    documents = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "flinkdeployment.yaml").read_text()) if d]
    kinds = [d["kind"] for d in documents]
    assert kinds.count("FlinkDeployment") == 1, kinds
    assert "Secret" not in kinds, "the Redis secret is created with kubectl, never committed"
    return next(d for d in documents if d["kind"] == "FlinkDeployment")


def flowrec_parser() -> argparse.ArgumentParser:
    return cli.build_parser(cli._available())


def job_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_job_arguments(parser)
    return parser


def flink_properties(text: str) -> dict[str, str]:
    """FLINK_PROPERTIES as the official image's entrypoint reads it: one `key: value` per line."""
    out = {}
    for line in text.splitlines():
        line = "".join(line.split())
        if line:
            key, _, value = line.partition(":")
            out[key] = value
    return out


# -- Dockerfile -------------------------------------------------------------------------


def dockerfile_arg(dockerfile: str, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", dockerfile, re.MULTILINE)
    assert match, f"ARG {name} with a default"
    return match.group(1)


def test_dockerfile_flink_image_matches_the_pinned_pyflink(dockerfile, flink_version):
    image = dockerfile_arg(dockerfile, "FLINK_IMAGE")
    assert image.startswith(f"flink:{flink_version}-"), image
    assert "java17" in image, "Flink 2 runs on Java 17"
    assert "FROM ${FLINK_IMAGE}" in dockerfile


def test_dockerfile_copies_every_package_the_project_installs(dockerfile, pyproject):
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted({p.rstrip("*") for p in patterns})
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    for package in packages:
        assert (REPO / package / "__init__.py").is_file(), package
        assert package in copied, f"{package}/ is not copied into the image"
    assert "deploy" in copied, "deploy/ (cluster.sh) is in the image"
    assert "-e ." in dockerfile and "-r pyproject.toml" in dockerfile


def test_dockerfile_puts_flink_python_on_the_cluster_classpath(dockerfile):
    assert re.search(r"ln -s /opt/flink/opt/flink-python-\*\.jar /opt/flink/lib/", dockerfile)


def test_dockerfile_venv_is_on_path_and_pythonpath(dockerfile):
    assert f"uv venv --python 3.11 {IMAGE_ROOT}/.venv" in dockerfile
    env = dict(re.findall(r"^\s*(?:ENV\s+)?(PATH|PYTHONPATH|FLOWREC_PYTHON)=(\S+)", dockerfile, re.MULTILINE))
    assert env["PATH"].startswith(f"{IMAGE_ROOT}/.venv/bin:")
    assert env["FLOWREC_PYTHON"] == VENV_PYTHON
    assert env["PYTHONPATH"].split(":") == [str(IMAGE_ROOT), f"{IMAGE_ROOT}/.venv/lib/python3.11/site-packages"]
    assert re.search(r"^USER flink$", dockerfile, re.MULTILINE), "the image does not run as root"


# -- docker-compose ---------------------------------------------------------------------------

FLOWREC_SERVICES = ("jobmanager", "taskmanager", "job", "api")


def test_compose_has_flink_redis_job_and_api(compose):
    services = compose["services"]
    assert set(services) >= {"redis", *FLOWREC_SERVICES}
    images = {services[name]["image"] for name in FLOWREC_SERVICES}
    assert len(images) == 1, f"one flowrec image for all services, got {images}"
    for name in FLOWREC_SERVICES:
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
    assert services["jobmanager"]["command"] == ["jobmanager"]
    assert services["taskmanager"]["command"] == ["taskmanager"]
    for name in ("jobmanager", "taskmanager"):
        assert services[name]["environment"]["JOB_MANAGER_RPC_ADDRESS"] == "jobmanager"


def test_compose_flink_properties_name_the_venv_and_the_shared_volume(compose):
    services = compose["services"]
    mounts = {name: {v.split(":")[1] for v in services[name]["volumes"]} for name in FLOWREC_SERVICES}
    assert all("/data" in m for m in mounts.values()), "spool, checkpoints and savepoints are shared"
    assert services["jobmanager"]["volumes"][0].split(":")[0] in compose["volumes"]
    for name in ("jobmanager", "taskmanager"):
        props = flink_properties(services[name]["environment"]["FLINK_PROPERTIES"])
        assert props["python.executable"] == VENV_PYTHON
        assert props["python.execution-mode"] == "thread"
        assert props["execution.checkpointing.dir"].startswith("file:///data/")
        assert props["execution.checkpointing.savepoint-dir"].startswith("file:///data/")
        assert int(props["taskmanager.numberOfTaskSlots"]) >= 1


def test_compose_job_command_is_a_valid_flowrec_submit(compose):
    services = compose["services"]
    command = services["job"]["command"]
    assert command[:2] == ["flowrec", "submit"]
    args = flowrec_parser().parse_args(command[1:])
    host, _, port = args.jobmanager.partition(":")
    assert host == "jobmanager" and port == services["jobmanager"]["ports"][0].split(":")[2]
    assert str(args.spool_dir).startswith("/data/")
    assert args.skip_if_running, "re-running `compose up` does not submit a second job"
    assert services["job"]["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert services["job"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_api_command_is_a_valid_flowrec_serve_on_the_jobs_spool(compose):
    services = compose["services"]
    command = services["api"]["command"]
    assert command[:2] == ["flowrec", "serve"]
    api = flowrec_parser().parse_args(command[1:])
    job = flowrec_parser().parse_args(services["job"]["command"][1:])
    assert api.spool_dir == job.spool_dir, "the API writes where the job reads"
    assert api.host == "0.0.0.0"  # inside its container; the port is published on loopback only (below)
    assert services["api"]["ports"][0].split(":")[2] == str(api.port)
    env = services["api"]["environment"]
    assert env["REDIS_URL"] == services["job"]["environment"]["REDIS_URL"]
    # The write keys come from a secret file, never from the command line or a variable's value.
    assert "FLOWREC_API_KEYS" not in env and api.api_keys is None
    [secret] = services["api"]["secrets"]
    assert env["FLOWREC_API_KEYS_FILE"] == f"/run/secrets/{secret}"
    key_file = DEPLOY / compose["secrets"][secret]["file"]
    assert key_file.parent == DEPLOY / "secrets"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(key_file)], cwd=REPO)
    assert ignored.returncode == 0, "the key file can never be committed"


def test_compose_publishes_ports_on_loopback_only(compose):
    published = {name: service.get("ports", []) for name, service in compose["services"].items()}
    assert published["api"] and published["jobmanager"]
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


# -- Kubernetes -----------------------------------------------------------------------------------


def test_flinkdeployment_required_fields(deployment, compose):
    assert deployment["apiVersion"] == "flink.apache.org/v1beta1"
    spec = deployment["spec"]
    for field in ("image", "flinkVersion", "serviceAccount", "flinkConfiguration", "jobManager", "taskManager", "job"):
        assert field in spec, field
    assert re.fullmatch(r"v2_\d+", spec["flinkVersion"])
    assert spec["image"] == compose["services"]["job"]["image"], "the same image as docker-compose"
    for role in ("jobManager", "taskManager"):
        assert re.fullmatch(r"\d+m", spec[role]["resource"]["memory"]) and spec[role]["resource"]["cpu"] > 0
    config = spec["flinkConfiguration"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in config.items()), "the operator takes a map of strings"
    assert config["python.executable"] == VENV_PYTHON and config["python.client.executable"] == VENV_PYTHON
    assert config["python.execution-mode"] == "thread"


def test_flinkdeployment_runs_pipelines_main_through_the_python_driver(deployment, flink_version):
    job = deployment["spec"]["job"]
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    assert job["jarURI"] == f"local:///opt/flink/opt/flink-python-{flink_version}.jar"
    args = list(job["args"])
    driver: dict[str, str] = {}
    while args and args[0] in ("-pyclientexec", "-pyexec", "-py"):
        driver[args[0]] = args[1]
        args = args[2:]
    assert driver["-pyclientexec"] == VENV_PYTHON and driver["-pyexec"] == VENV_PYTHON
    script = PurePosixPath(driver["-py"])
    assert script.is_relative_to(IMAGE_ROOT) and (REPO / script.relative_to(IMAGE_ROOT)).is_file(), script
    assert script.relative_to(IMAGE_ROOT) == PurePosixPath("pipelines/main.py")
    parsed = job_parser().parse_args(args)  # raises on any flag main.py does not define
    assert parsed.parallelism == job["parallelism"]
    assert job["upgradeMode"] in ("savepoint", "last-state", "stateless")
    assert job["state"] == "running"


def test_flinkdeployment_storage_is_on_the_mounted_volume(deployment):
    spec = deployment["spec"]
    pod = spec["podTemplate"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "flink-main-container")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts) <= set(volumes)
    config = spec["flinkConfiguration"]
    paths = [config["execution.checkpointing.dir"], config["execution.checkpointing.savepoint-dir"], config["high-availability.storageDir"]]
    if spec["job"]["upgradeMode"] != "stateless":
        assert config["high-availability.type"] == "kubernetes"
    args = spec["job"]["args"]
    paths.append("file://" + args[args.index("--spool-dir") + 1])
    for path in paths:
        assert path.startswith("file://"), path
        assert any(path[len("file://"):].startswith(m + "/") for m in mounts.values()), f"{path} is not on a mounted volume"


def test_flinkdeployment_redis_url_comes_from_a_secret(deployment):
    container = next(c for c in deployment["spec"]["podTemplate"]["spec"]["containers"] if c["name"] == "flink-main-container")
    env = {e["name"]: e for e in container["env"]}
    ref = env["REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "REDIS_URL", "the secret's key is the variable's name"
    assert "value" not in env["REDIS_URL"]
    # The command that creates the secret (manifest header and runbook) names the same secret and key.
    for doc in (DEPLOY / "k8s" / "flinkdeployment.yaml", DEPLOY / "README.md"):
        text = doc.read_text()
        match = re.search(r"kubectl create secret generic (\S+)\s*\\?\s*(?:#\s*)?--from-literal=(\w+)=", text)
        assert match, f"{doc.name} shows how to create the secret"
        assert (match.group(1), match.group(2)) == (ref["name"], ref["key"])
    # ... and REDIS_URL is what the job reads.
    from flowrec.config import load_settings

    assert load_settings(None, env={"REDIS_URL": "redis://example:6379/0"}).redis_url == "redis://example:6379/0"


# -- standalone cluster configuration -------------------------------------------------------------


def test_cluster_conf_template_placeholders_are_all_filled_by_cluster_sh():
    template = (DEPLOY / "flink-conf" / "config.yaml").read_text()
    placeholders = set(re.findall(r"\$\{([A-Z_]+)\}", template))
    assert {"REST_PORT", "RPC_PORT", "SLOTS", "PYTHON", "TM_MEMORY", "JM_MEMORY", "RUN_DIR"} <= placeholders
    script = (DEPLOY / "cluster.sh").read_text()
    render = script[script.index("render_conf() {"):]
    assigned = set(re.findall(r"\b([A-Z_]+)=\"\$", render[: render.index("<<'PY'")]))
    assert placeholders <= assigned, placeholders - assigned
    conf = yaml.safe_load(template)
    assert conf["taskmanager"]["numberOfTaskSlots"] == "${SLOTS}"
    assert conf["python"]["executable"] == "${PYTHON}"
    assert conf["python"]["execution-mode"] == "thread"
    assert conf["rest"]["port"] == "${REST_PORT}"


def test_cluster_sh_settings_are_documented_in_its_header():
    script = (DEPLOY / "cluster.sh").read_text()
    header = script[: script.index("set -euo pipefail")]
    used = set(re.findall(r"\b(FLOWREC_[A-Z_]+)", script[len(header):]))
    for name in used:
        assert name in header, f"{name} is not documented in the header"


def test_readme_commands_are_valid_flowrec_commands():
    """Every `flowrec ...` line in the runbook's code blocks parses with the real CLI."""
    readme = (DEPLOY / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.DOTALL)
    commands = []
    for line in "".join(blocks).splitlines():
        line = line.strip()
        if "$(flowrec " in line:
            line = line.split("$(", 1)[1].rsplit(")", 1)[0]
        if line.startswith("flowrec "):
            commands.append(shlex.split(line.split(" #")[0]))
    assert len(commands) >= 10
    parser = flowrec_parser()
    for words in commands:
        parser.parse_args(words[1:])  # exits (SystemExit 2) on an unknown command or flag
