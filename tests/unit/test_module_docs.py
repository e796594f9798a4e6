"""Module documentation stays true to the argument spec (ansible-doc and the README rely on it)."""

import pytest
import yaml

import sigsleuth_snapshot
import sigsleuth_trace
from ansible.module_utils import basic


@pytest.mark.parametrize("module", [sigsleuth_trace, sigsleuth_snapshot])
def test_documentation_matches_the_argument_spec(module, monkeypatch):
    captured = {}

    def fake_init(self, argument_spec, supports_check_mode=False, **kwargs):
        captured.update(spec=argument_spec, check_mode=supports_check_mode)
        raise StopIteration

    monkeypatch.setattr(basic.AnsibleModule, "__init__", fake_init)
    with pytest.raises(StopIteration):
        module.build_module()
    documented = yaml.safe_load(module.DOCUMENTATION)
    yaml.safe_load(module.EXAMPLES)
    yaml.safe_load(module.RETURN)

    assert captured["check_mode"] is True
    assert documented["attributes"]["check_mode"]["support"] == "full"
    assert documented["attributes"]["diff_mode"]["support"] == "full"
    options = documented["options"]
    assert set(options) == set(captured["spec"])
    for name, spec in captured["spec"].items():
        assert options[name]["type"] == spec["type"], name
        assert options[name].get("default") == spec.get("default"), name
        assert options[name].get("choices") == spec.get("choices"), name
        assert options[name].get("elements") == spec.get("elements"), name
