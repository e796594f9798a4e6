"""Module documentation stays true to the argument spec and to the collection's conventions (ansible-doc,
ansible-test validate-modules and the README rely on it).

That RETURN covers what the modules really return is checked on every run of a module in the unit tests
(sigsleuth_fakes.run_module)."""

import inspect
import re

import pytest
import yaml

import sigsleuth_audit
import sigsleuth_facts
import sigsleuth_snapshot
import sigsleuth_trace
import sigsleuth_watch
from ansible.module_utils import basic
from sigsleuth_fakes import undocumented_returns

MODULES = [sigsleuth_trace, sigsleuth_snapshot, sigsleuth_audit, sigsleuth_facts, sigsleuth_watch]
# The first release is collection version 1.0.0: every module, and every option, is new in it.
VERSION_ADDED = "1.0.0"
AUTHORS = ["sigsleuth developers (@sigsleuth)"]
# validate-modules: each author is "Name (@github_handle)".
AUTHOR_FORMAT = re.compile(r"^[^()@]+ \(@[A-Za-z0-9-]+\)$")
# validate-modules wants seealso and M() to name modules by FQCN: the collection these modules ship in.
COLLECTION = "sigsleuth.sigsleuth"
LICENSE_HEADER = [
    "# Copyright: (c) 2026, sigsleuth developers",
    "# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)",
]


@pytest.fixture(params=MODULES, ids=lambda module: module.__name__)
def module(request):
    return request.param


def documented(module):
    return yaml.safe_load(module.DOCUMENTATION)


def argument_spec(module, monkeypatch):
    """(argument_spec, supports_check_mode) that build_module() gives AnsibleModule."""
    captured = {}

    def fake_init(self, argument_spec, supports_check_mode=False, **kwargs):
        captured.update(spec=argument_spec, check_mode=supports_check_mode)
        raise StopIteration

    monkeypatch.setattr(basic.AnsibleModule, "__init__", fake_init)
    with pytest.raises(StopIteration):
        module.build_module()
    return captured["spec"], captured["check_mode"]


def test_documentation_examples_and_return_parse(module):
    docs = documented(module)
    assert docs["module"] == module.__name__
    assert docs["short_description"] and docs["description"]
    examples = yaml.safe_load(module.EXAMPLES)
    assert examples and all(isinstance(task, dict) and task.get("name") for task in examples)
    assert any(module.__name__ in task for task in examples), "no example calls the module"
    returned = yaml.safe_load(module.RETURN)
    assert isinstance(returned, dict) and returned


def test_documentation_matches_the_argument_spec(module, monkeypatch):
    spec, check_mode = argument_spec(module, monkeypatch)
    docs = documented(module)
    assert check_mode is True
    assert docs["attributes"]["check_mode"]["support"] == "full"
    options = docs["options"]
    assert set(options) == set(spec)
    for name, option_spec in spec.items():
        assert options[name]["description"], name
        assert options[name]["type"] == option_spec["type"], name
        assert options[name].get("default") == option_spec.get("default"), name
        assert options[name].get("choices") == option_spec.get("choices"), name
        assert options[name].get("elements") == option_spec.get("elements"), name
        assert options[name].get("required", False) == option_spec.get("required", False), name
        assert options[name].get("aliases") == option_spec.get("aliases"), name


@pytest.mark.parametrize("module, diff_support", [
    (sigsleuth_trace, "full"), (sigsleuth_snapshot, "full"), (sigsleuth_audit, "full"), (sigsleuth_facts, "none"),
    (sigsleuth_watch, "none"),
], ids=lambda value: getattr(value, "__name__", value))
def test_diff_mode_support(module, diff_support):
    assert documented(module)["attributes"]["diff_mode"]["support"] == diff_support


def test_authors_are_name_and_handle(module):
    authors = documented(module)["author"]
    assert authors == AUTHORS
    assert all(AUTHOR_FORMAT.match(author) for author in authors)


def test_license_header(module):
    with open(inspect.getsourcefile(module)) as handle:
        head = [next(handle).rstrip("\n") for _ in range(20)]
    assert head[0] == "#!/usr/bin/python"
    for line in LICENSE_HEADER:
        assert line in head, line


def test_version_added_is_the_first_release(module):
    docs = documented(module)
    assert docs["version_added"] == VERSION_ADDED
    for name, option in docs["options"].items():
        assert option.get("version_added", VERSION_ADDED) == VERSION_ADDED, name


def test_every_attribute_is_described(module):
    attributes = documented(module)["attributes"]
    expected = {"check_mode", "diff_mode", "platform"} | ({"facts"} if module is sigsleuth_facts else set())
    assert set(attributes) == expected
    for name, attribute in attributes.items():
        assert attribute.get("description"), name
        assert attribute.get("support") in ("full", "partial", "none", "N/A"), name
    assert attributes["platform"]["platforms"] == "linux"
    if module is sigsleuth_facts:
        assert attributes["facts"]["support"] == "full"


def test_references_to_modules_are_fqcn(module):
    docs = documented(module)
    text = module.DOCUMENTATION + module.RETURN
    references = re.findall(r"M\(([^)]*)\)", text) + [entry["module"] for entry in docs.get("seealso", [])]
    ours = {"%s.%s" % (COLLECTION, other.__name__) for other in MODULES}
    assert references
    for reference in references:
        assert reference.count(".") >= 2, reference
        assert reference in ours or not reference.startswith(COLLECTION + "."), reference
    seealso = {entry["module"] for entry in docs.get("seealso", [])}
    assert seealso == ours - {"%s.%s" % (COLLECTION, module.__name__)}


def return_entries(entries, prefix=""):
    for key, entry in entries.items():
        yield prefix + key, entry
        yield from return_entries(entry.get("contains") or {}, prefix + key + ".")


def test_return_entries_are_complete(module):
    for name, entry in return_entries(yaml.safe_load(module.RETURN)):
        assert entry.get("description"), name
        assert entry.get("returned"), name
        assert entry.get("type") in ("str", "int", "bool", "float", "list", "dict", "raw", "complex"), name
        if entry["type"] == "list":
            assert entry.get("elements"), name


def test_undocumented_returns_are_found():
    documented = yaml.safe_load(sigsleuth_facts.RETURN)
    report = {"schema_version": "1.1.0", "host": "web1", "kills": [], "signals": [True], "armed_at": 5}
    problems = undocumented_returns(documented, {"changed": False, "report": report, "extra": 1})
    assert sorted(problems) == ["extra is not documented", "report.armed_at is int, documented as str",
                                "report.signals has elements that are not int"]
