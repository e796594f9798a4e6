"""The control-node action sigsleuth_report_files is documented by library/sigsleuth_report_files.py (what
ansible-doc and ansible-test's action-plugin-docs read): the documentation agrees with what the action takes
and returns, and follows the modules' conventions."""

import importlib.util
import inspect
import os

import yaml

import sigsleuth_report_files as docs_module
from test_module_docs import AUTHORS, COLLECTION, LICENSE_HEADER, VERSION_ADDED

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "sigsleuth_report_files_action", os.path.join(ROOT, "roles", "sigsleuth", "action_plugins",
                                                  "sigsleuth_report_files.py"))
action = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(action)


def test_documentation_matches_the_action():
    docs = yaml.safe_load(docs_module.DOCUMENTATION)
    assert docs["module"] == "sigsleuth_report_files" and docs["version_added"] == VERSION_ADDED
    assert set(docs["options"]) == set(action.ActionModule._VALID_ARGS)
    assert docs["author"] == AUTHORS
    assert docs["options"]["title"]["default"] == action.summary_renderer().TITLE
    assert [entry["module"] for entry in docs["seealso"]] == ["%s.sigsleuth_facts" % COLLECTION]
    returned = yaml.safe_load(docs_module.RETURN)
    written = action.write_reports("/nonexistent/reports", {"web1": {"report": {"kills": []}, "error": None}},
                                   write=False)
    assert set(written) | {"dir"} == set(returned)
    examples = yaml.safe_load(docs_module.EXAMPLES)
    assert all(task.get("name") and "sigsleuth_report_files" in task for task in examples)


def test_license_header_and_only_documentation():
    with open(inspect.getsourcefile(docs_module)) as handle:
        source = handle.read()
    head = source.splitlines()[:10]
    assert head[0] == "#!/usr/bin/python"
    for line in LICENSE_HEADER:
        assert line in head, line
    assert "def " not in source and "import " not in source.replace("from __future__ import annotations", "")
