"""collection/build.py: the collection's layout, FQCN everywhere ours is called, module_utils imports in the
collection's namespace, and nothing else of a file changed."""

import os
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "collection"))

import build  # noqa: E402

PACKAGE = "ansible_collections.sigsleuth.sigsleuth.plugins.module_utils"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build.assemble(build.ROOT, str(tmp_path_factory.mktemp("collection")))


@pytest.fixture(scope="module")
def names():
    return build.Names(build.ROOT, "sigsleuth", "sigsleuth")


def files_under(root, *parts):
    directory = os.path.join(root, *parts)
    return sorted(os.listdir(directory))


def test_layout(built):
    assert built.endswith(os.path.join("ansible_collections", "sigsleuth", "sigsleuth"))
    for relative in ("galaxy.yml", "meta/runtime.yml", "README.md", "LICENSE", "changelogs/changelog.yaml",
                     "changelogs/config.yaml", "tests/config.yml", "docs/report.schema.json",
                     "roles/sigsleuth/tasks/main.yml", "roles/sigsleuth/meta/argument_specs.yml"):
        assert os.path.isfile(os.path.join(built, relative)), relative
    assert files_under(built, "plugins", "modules") == files_under(ROOT, "library")
    assert files_under(built, "plugins", "module_utils") == files_under(ROOT, "module_utils")
    assert files_under(built, "plugins", "filter") == sorted(
        name for name in os.listdir(os.path.join(ROOT, "roles", "sigsleuth", "filter_plugins")) if name.endswith(".py"))
    assert not os.path.exists(os.path.join(built, "roles", "sigsleuth", "filter_plugins"))
    assert files_under(built, "plugins", "action") == sorted(
        name for name in os.listdir(os.path.join(ROOT, "roles", "sigsleuth", "action_plugins")) if name.endswith(".py"))
    assert not os.path.exists(os.path.join(built, "roles", "sigsleuth", "action_plugins"))
    for template in ("summary.md.j2", "summary.html.j2", "summary.js"):
        assert os.path.isfile(os.path.join(built, "roles", "sigsleuth", "templates", template)), template


def test_every_playbook_but_the_demo(built):
    expected = sorted(name for name in os.listdir(os.path.join(ROOT, "playbooks"))
                      if name.endswith(".yml") and name != "demo.yml")
    assert {"arm.yml", "collect.yml", "disarm.yml"} <= set(expected)
    assert files_under(built, "playbooks") == expected


def test_no_module_utils_reference_is_left_outside_the_collection(built):
    for kind in ("modules", "module_utils", "filter", "action"):
        for name in files_under(built, "plugins", kind):
            with open(os.path.join(built, "plugins", kind, name)) as handle:
                text = handle.read()
            assert "ansible.module_utils.sigsleuth" not in text, name
    with open(os.path.join(built, "plugins", "modules", "sigsleuth_facts.py")) as handle:
        assert "from %s.sigsleuth_collect import collect" % PACKAGE in handle.read()


def yaml_files(root):
    for directory, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".yml"):
                yield os.path.join(directory, name)


def test_ours_is_called_by_fqcn_and_nothing_else_changed(built, names):
    """Same lines as the source, except the exact tokens that name our modules, role and filters."""
    pairs = [(os.path.join(ROOT, "roles", "sigsleuth", os.path.relpath(path, os.path.join(built, "roles", "sigsleuth"))),
              path) for path in yaml_files(os.path.join(built, "roles"))]
    pairs += [(os.path.join(ROOT, "playbooks", os.path.basename(path)), path)
              for path in yaml_files(os.path.join(built, "playbooks"))]
    rewritten = 0
    for source, target in pairs:
        with open(source) as handle:
            before = handle.read().split("\n")
        with open(target) as handle:
            after = handle.read().split("\n")
        assert len(before) == len(after), target
        for old, new in zip(before, after):
            if old != new:
                rewritten += 1
                assert new.replace("sigsleuth.sigsleuth.", "") == old, (target, old, new)
        build.check_yaml("\n".join(after), target, names, tasks=build.is_task_file(
            os.path.relpath(target, os.path.join(built, "roles", "sigsleuth"))) or "playbooks" in target)
    assert rewritten >= len(names.modules) + 3


def test_the_role_and_playbooks_name_everything_by_fqcn(built):
    with open(os.path.join(built, "playbooks", "arm.yml")) as handle:
        play = yaml.safe_load(handle)[0]
    assert play["tasks"][0]["ansible.builtin.include_role"]["name"] == "sigsleuth.sigsleuth.sigsleuth"
    with open(os.path.join(built, "roles", "sigsleuth", "tasks", "collect.yml")) as handle:
        text = handle.read()
    assert "sigsleuth.sigsleuth.sigsleuth_facts:" in text
    # The summaries are rendered by the action that writes the reports (its filters by module, not by name).
    assert text.count("sigsleuth.sigsleuth.sigsleuth_report_files:") == 2
    assert "| sigsleuth.sigsleuth.sigsleuth_stats(" in text
    with open(os.path.join(built, "plugins", "modules", "sigsleuth_trace.py")) as handle:
        module = handle.read()
    examples = module.split('EXAMPLES = r"""', 1)[1].split('"""', 1)[0]
    assert all(("sigsleuth.sigsleuth.sigsleuth_trace" in task) for task in
               [str(entry) for entry in yaml.safe_load(examples) if "sigsleuth_trace" in str(entry)])


def test_python_rewrites(names):
    text = ("from ansible.module_utils.basic import AnsibleModule\n"
            "from ansible.module_utils.sigsleuth_state import StateStore\n"
            "from ansible.module_utils import sigsleuth_clock, sigsleuth_loss as loss\n"
            "import ansible.module_utils.sigsleuth_report\n"
            "ENGINE = 'ansible.module_utils.sigsleuth_collect'\n")
    out = build.rewrite_python(text, names, "x.py")
    assert out.splitlines() == [
        "from ansible.module_utils.basic import AnsibleModule",
        "from %s.sigsleuth_state import StateStore" % PACKAGE,
        "from %s import sigsleuth_clock, sigsleuth_loss as loss" % PACKAGE,
        "import %s.sigsleuth_report" % PACKAGE,
        "ENGINE = '%s.sigsleuth_collect'" % PACKAGE,
    ]


@pytest.mark.parametrize("text, reason", [
    ("from ansible.module_utils.sigsleuth_nowhere import x\n", "names no file"),
    ("from ansible.module_utils import basic, sigsleuth_clock\n", "split"),
    ("path = 'ansible/module_utils/sigsleuth_clock.py'\n", "cannot rewrite"),
])
def test_python_rewrites_refuse_what_they_cannot_do_right(names, text, reason):
    with pytest.raises(build.BuildError, match=reason):
        build.rewrite_python(text, names, "x.py")


def test_a_short_name_left_behind_stops_the_build(names):
    with pytest.raises(build.BuildError, match="short name"):
        build.check_yaml("- name: x\n  sigsleuth_trace:\n    state: present\n", "t.yml", names, tasks=True)
    with pytest.raises(build.BuildError, match="short name"):
        build.check_yaml("x: \"{{ a | sigsleuth_summary }}\"\n", "v.yml", names, tasks=False)


def test_a_variable_named_like_a_module_is_a_variable(names):
    text = ("- name: t\n  ansible.builtin.include_role:\n    name: sigsleuth\n  vars:\n    sigsleuth_trace: 1\n"
            "- name: q\n  sigsleuth_trace:\n    state: present\n")
    out = build.rewrite_yaml(text, "t.yml", names, tasks=True)
    assert "    sigsleuth_trace: 1\n" in out and "  sigsleuth.sigsleuth.sigsleuth_trace:\n" in out


def test_yaml_rewrite_keeps_quotes_comments_and_blocks(names):
    text = ("---\n# sigsleuth_trace: a comment stays\n- name: t\n  block:\n    - name: inner\n      'sigsleuth_audit':\n"
            "        state: absent\n    - name: role\n      ansible.builtin.import_role:\n        name: \"sigsleuth\"\n"
            "  rescue:\n    - name: s\n      ansible.builtin.debug:\n        msg: >-\n          {{ x |\n          sigsleuth_summary }}\n")
    out = build.rewrite_yaml(text, "t.yml", names, tasks=True)
    assert out == text.replace("'sigsleuth_audit'", "'sigsleuth.sigsleuth.sigsleuth_audit'").replace(
        '"sigsleuth"', '"sigsleuth.sigsleuth.sigsleuth"').replace(
        "          sigsleuth_summary }}", "          sigsleuth.sigsleuth.sigsleuth_summary }}")
