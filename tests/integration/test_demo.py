"""`make demo`'s playbook, for real: it stages the seed's mystery, names the killer and its ancestry, and leaves
the host exactly as it found it (no instance, state, mount change or scenario process) even though its
scenario supervisor is daemonised. This test process is made a child subreaper, so that supervisor comes back
to it and is reaped, also where pid 1 does not reap orphans."""

import json

from sigsleuth_support import assert_no_residue, child_subreaper, run_playbook, scenario_processes, zombie_children


def test_demo_names_the_killer_and_cleans_up(host_baseline, report_schema, tmp_path):
    report_dir = tmp_path / "reports"
    with child_subreaper():
        run = run_playbook("demo.yml", "-e", "sigsleuth_report_dir=%s" % report_dir)
    assert run.host()["failed"] == 0
    assert "Show who killed the agent" in run.stdout and "Show what the scenario really staged" in run.stdout
    assert_no_residue(host_baseline, "after the demo")
    assert scenario_processes() == [] and zombie_children() == []

    report = json.loads((report_dir / "localhost" / "report.json").read_text())
    assert not list(report_schema.iter_errors(report))
    kills = [k for k in report["kills"] if k["victim"]["comm"] == "collector-agent"]
    assert len(kills) == 1, report["kills"]
    kill = kills[0]
    assert (kill["sender"]["comm"], kill["sender"]["exe"]) == ("kill", "/usr/bin/kill")
    # The demo arms as a user would, with the light default: kill(2) is named within its honest family.
    assert kill["mechanism"] == "user_signal" and "kill" in kill["mechanism_candidates"], kill
    shell, daemon = kill["ancestry"][:2]
    assert (shell["comm"], shell["exited"]) == ("sh", True)
    assert (daemon["comm"], daemon["exited"]) == ("agentd-cron", False)
    staged = run.stdout.split("Show what the scenario really staged", 1)[1]
    assert "from kill[%d]" % kill["sender"]["pid"] in staged
    assert "<- sh[%d]" % shell["pid"] in staged and "<- agentd-cron[%d]" % daemon["pid"] in staged
