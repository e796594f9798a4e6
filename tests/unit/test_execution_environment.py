"""execution-environment.yml: `ansible-builder create` makes a build context holding the collection and its
requirements (no container runtime is needed for that step), and the image's galaxy stage can install the
collection from it. Its pins are constraints.txt's."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "collection"))

import build  # noqa: E402

BIN = os.path.dirname(sys.executable)
EE_FILE = os.path.join(ROOT, "execution-environment.yml")


def load(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def constraints():
    pins = {}
    with open(os.path.join(ROOT, "constraints.txt")) as handle:
        for line in handle:
            if "==" in line and not line.startswith("#"):
                name, version = line.strip().split("==")
                pins[name.lower()] = version
    return pins


def pin(requirement):
    name, version = requirement.split("==")
    return name.lower(), version


def test_the_pins_are_the_projects():
    pins = constraints()
    dependencies = load(EE_FILE)["dependencies"]
    for key in ("ansible_core", "ansible_runner"):
        name, version = pin(dependencies[key]["package_pip"])
        assert pins[name] == version, "%s: %s==%s, constraints.txt has %s" % (key, name, version, pins[name])
    runtime = {}
    with open(os.path.join(ROOT, "requirements.txt")) as handle:
        for line in handle:
            if "==" in line and not line.startswith("#"):
                runtime.update([pin(line.strip())])
    python = dict(pin(requirement) for requirement in dependencies["python"])
    # What the control node runs with (requirements.txt), less pytest-testinfra (tests) and ansible-core (above).
    assert python == {name: version for name, version in runtime.items()
                      if name not in ("ansible-core", "pytest-testinfra")}


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """`ansible-builder create` on a copy of the EE file beside a freshly assembled collection."""
    work = tmp_path_factory.mktemp("ee")
    shutil.copy(EE_FILE, str(work / "execution-environment.yml"))
    build.assemble(ROOT, str(work / "build"))
    proc = subprocess.run([os.path.join(BIN, "ansible-builder"), "create", "-f", str(work / "execution-environment.yml"),
                           "-c", str(work / "context"), "--output-filename", "Containerfile"],
                          capture_output=True, text=True, timeout=300, cwd=str(work))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No matches" not in proc.stdout + proc.stderr, "a build file is missing:\n" + proc.stdout + proc.stderr
    return work / "context"


def test_the_context_holds_the_collection(context):
    galaxy = load(os.path.join(ROOT, "galaxy.yml"))
    collection = context / "_build" / "collections" / "sigsleuth"
    assert load(str(collection / "galaxy.yml"))["version"] == galaxy["version"]
    for relative in ("meta/runtime.yml", "roles/sigsleuth/tasks/collect.yml", "playbooks/collect.yml",
                     "plugins/modules/sigsleuth_facts.py", "plugins/module_utils/sigsleuth_collect.py",
                     "plugins/filter/sigsleuth_stats.py"):
        assert (collection / relative).is_file(), relative
    requirements = load(str(context / "_build" / "requirements.yml"))
    assert requirements == {"collections": [{"name": "collections/sigsleuth", "type": "dir"}]}


def test_the_containerfile_installs_ansible_the_requirements_and_the_collection(context):
    containerfile = (context / "Containerfile").read_text()
    pins = constraints()
    assert 'ANSIBLE_INSTALL_REFS="ansible-core==%s ansible-runner==%s"' % (
        pins["ansible-core"], pins["ansible-runner"]) in containerfile
    assert re.search(r"^COPY _build /build$", containerfile, re.M)
    assert re.search(r"ansible-galaxy collection install .*-r requirements.yml", containerfile)
    requirements = (context / "_build" / "requirements.txt").read_text().split()
    assert requirements == ["jinja2==%s" % pins["jinja2"], "pyyaml==%s" % pins["pyyaml"]]
    assert "openssh-clients" in (context / "_build" / "bindep.txt").read_text()


def test_the_galaxy_stage_installs_the_collection(context, tmp_path):
    """What the image's galaxy stage runs (in /build, i.e. _build), here without a container."""
    # Only the fresh path counts: a collection installed elsewhere on this machine must not satisfy it.
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path))
    proc = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "-r", "requirements.yml",
                           "--collections-path", str(tmp_path)], cwd=str(context / "_build"), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = tmp_path / "ansible_collections" / "sigsleuth" / "sigsleuth" / "MANIFEST.json"
    assert manifest.is_file(), proc.stdout
