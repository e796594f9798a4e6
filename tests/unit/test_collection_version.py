"""The version lives in one place, galaxy.yml; everything that states a version agrees with it.

* the report's producer (module_utils/sigsleuth_report.py PRODUCER) names the collection and that version;
* every module's version_added, and every option's, is a released or the current version, never a later one;
* the role's entry points (meta/argument_specs.yml) likewise;
* meta/runtime.yml's requires_ansible and the role's min_ansible_version name the same ansible-core;
* changelogs/changelog.yaml has no release later than it.
"""

import glob
import importlib.util
import os
import re

import pytest
import yaml

from ansible.module_utils import sigsleuth_report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def load_yaml(relative):
    with open(os.path.join(ROOT, relative)) as handle:
        return yaml.safe_load(handle)


def version(text):
    match = SEMVER.match(str(text))
    assert match, "%r is not a semver version (MAJOR.MINOR.PATCH)" % (text,)
    return tuple(int(part) for part in match.groups())


GALAXY = load_yaml("galaxy.yml")
CURRENT = version(GALAXY["version"])
MODULE_PATHS = sorted(glob.glob(os.path.join(ROOT, "library", "*.py")))


def load_module(path):
    spec = importlib.util.spec_from_file_location("version_check_" + os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_galaxy_names_the_collection():
    assert (GALAXY["namespace"], GALAXY["name"]) == ("sigsleuth", "sigsleuth")
    assert CURRENT >= (1, 0, 0)


def test_the_report_names_its_producer():
    assert sigsleuth_report.PRODUCER == {"name": "%s.%s" % (GALAXY["namespace"], GALAXY["name"]),
                                         "version": GALAXY["version"]}


@pytest.mark.parametrize("path", MODULE_PATHS, ids=os.path.basename)
def test_module_version_added_is_not_later_than_the_collection(path):
    docs = yaml.safe_load(load_module(path).DOCUMENTATION)
    assert version(docs["version_added"]) <= CURRENT, "%s is newer than galaxy.yml's %s" % (
        docs["version_added"], GALAXY["version"])
    for name, option in docs.get("options", {}).items():
        if "version_added" in option:
            assert version(option["version_added"]) <= CURRENT, name
            assert version(option["version_added"]) >= version(docs["version_added"]), name


def test_role_entry_points_agree():
    specs = load_yaml("roles/sigsleuth/meta/argument_specs.yml")["argument_specs"]
    for entry, spec in specs.items():
        assert "version_added" in spec, "%s has no version_added" % entry
        assert version(spec["version_added"]) <= CURRENT, entry
        for name, option in spec.get("options", {}).items():
            if "version_added" in option:
                assert version(option["version_added"]) <= CURRENT, name


def test_the_oldest_ansible_core_is_named_once():
    requires = load_yaml("meta/runtime.yml")["requires_ansible"]
    match = re.match(r"^>=(\d+)\.(\d+)(?:\.0)?$", requires)
    assert match, "requires_ansible should be a plain lower bound, got %r" % requires
    minimum = load_yaml("roles/sigsleuth/meta/main.yml")["galaxy_info"]["min_ansible_version"]
    assert str(minimum) == "%s.%s" % match.groups()


def test_no_release_is_later_than_the_version():
    changelog = load_yaml("changelogs/changelog.yaml")
    released = [version(name) for name in (changelog.get("releases") or {})]
    assert all(release <= CURRENT for release in released), sorted(released)


def test_every_fragment_is_a_mapping_of_sections():
    """antsibull-changelog lint (make lint) checks them fully; this catches an empty or misplaced one early."""
    config = load_yaml("changelogs/config.yaml")
    sections = {name for name, _title in config["sections"]} | {config["trivial_section_name"],
                                                                config["prelude_section_name"]}
    fragments = sorted(glob.glob(os.path.join(ROOT, "changelogs", "fragments", "*.y*ml")))
    assert fragments, "no changelog fragment: every change adds one (changelogs/fragments/)"
    for path in fragments:
        with open(path) as handle:
            fragment = yaml.safe_load(handle)
        assert isinstance(fragment, dict) and fragment, path
        assert set(fragment) <= sections, (path, sorted(set(fragment) - sections))
