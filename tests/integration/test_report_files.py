"""The report files on the control node, for real: host names are data (inventory hosts named `../x` and
`a/b` write inside the report directory, a host whose report directory cannot be written fails alone with
the reason), an unusable report directory stops collect before any host is read, and summary.html works in a
real headless Chromium (Debian's chromium and chromium-driver, installed by .ci/run; no browser download):
it loads from disk, shows every host and kill, its filters work, and hostile process names stay text.

Nothing here arms: the hosts collect from a state directory of this test's own that was never armed, so
these tests need no lock and leave nothing on the machine.
"""

import copy
import importlib.util
import json
import os
import shutil
import sys

import pytest

from sigsleuth_support import ROOT, run_playbook

ACTION = os.path.join(ROOT, "roles", "sigsleuth", "action_plugins", "sigsleuth_report_files.py")
_spec = importlib.util.spec_from_file_location("sigsleuth_report_files", ACTION)
report_files = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_files)
sys.path.insert(0, os.path.join(ROOT, "tests", "unit"))
from test_summary_filter import SEED_KILL, process, report  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PATH_HOSTS = ("../x", "a/b")
BLOCKED = "present-blocked"
TITLE = "sigsleuth summary"
SCRIPT_NAME = "<script>document.title='pwned';window.pwned=1</script>"
IMG_NAME = "<img src=x onerror=\"window.pwned=2;alert(2)\">"


def inventory(tmp_path, hosts):
    path = tmp_path / "inventory.ini"
    python = "/usr/bin/python3"
    path.write_text("".join("%s ansible_connection=local ansible_python_interpreter=%s\n" % (host, python)
                            for host in hosts))
    return str(path)


def collect(tmp_path, report_dir, hosts, expect_rc):
    return run_playbook("collect.yml", "-i", inventory(tmp_path, hosts), "-e",
                        "sigsleuth_report_dir=%s" % report_dir, "-e",
                        "sigsleuth_state_dir=%s" % (tmp_path / "never-armed"), expect_rc=expect_rc)


@pytest.fixture(scope="module")
def path_like_collect(tmp_path_factory):
    """One real collect of `../x`, `a/b` and a host whose report directory is taken by a file."""
    tmp_path = tmp_path_factory.mktemp("hostnames")
    report_dir = tmp_path / "reports"
    report_dir.mkdir(mode=0o700)
    (report_dir / BLOCKED).write_text("not a directory\n")
    run = collect(tmp_path, report_dir, PATH_HOSTS + (BLOCKED,), expect_rc=2)
    return tmp_path, report_dir, run


def test_path_like_host_names_stay_inside_the_report_dir(path_like_collect):
    tmp_path, report_dir, run = path_like_collect
    assert sorted(os.listdir(tmp_path)) == ["inventory.ini", "reports"]
    assert sorted(os.listdir(report_dir)) == sorted(["%2E.%2Fx", "a%2Fb", BLOCKED, "summary.md", "summary.html"])
    for host in PATH_HOSTS:
        path = report_dir / report_files.host_dir_name(host) / "report.json"
        assert json.loads(path.read_text())["host"] == host
        assert oct(path.stat().st_mode & 0o777) == oct(0o600)
        assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700)
        assert run.host(host)["failed"] == 0
    assert not os.path.exists(os.path.join(str(tmp_path), "x")) and not os.path.exists(str(tmp_path / "a"))


def test_a_host_whose_report_cannot_be_written_fails_alone_with_the_reason(path_like_collect):
    _tmp_path, report_dir, run = path_like_collect
    assert run.host(BLOCKED)["failed"] == 1
    reason = "%s is not a directory of ours (a symlink or a file): not followed, not replaced" % (report_dir / BLOCKED)
    assert "sigsleuth could not write the report of %s: %s" % (BLOCKED, reason) in run.stdout
    assert (report_dir / BLOCKED).read_text() == "not a directory\n"
    summary = (report_dir / "summary.md").read_text()
    assert "3 hosts, 0 kills; report not written for present-blocked." in summary
    assert "## ../x" in summary and "## a/b" in summary


def test_an_unusable_report_dir_stops_collect_before_any_host_is_read(tmp_path):
    occupied = tmp_path / "occupied"
    occupied.write_text("")
    run = collect(tmp_path, occupied, ("present-one",), expect_rc=2)
    assert "cannot write sigsleuth reports to %s" % occupied in run.stdout
    assert "Read the trace and reconstruct each kill" not in run.stdout


# ---------------------------------------------------------------- the page in a real browser

@pytest.fixture(scope="module")
def browser():
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip("chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--allow-file-access-from-files", "--window-size=1280,2000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def hostile_fleet():
    def kill(victim, second, sender="kill"):
        entry = copy.deepcopy(SEED_KILL)
        entry["time"] = "2026-11-26T07:01:%02d.000000Z" % second
        entry["victim"] = dict(process(100 + second, victim, "/opt/" + victim), argv=[victim, "--serve"], uid=0)
        entry["sender"] = dict(process(200 + second, sender, "/usr/bin/kill"), argv=[sender, "-9", victim],
                               uid=0, auid=1000, cgroup="/system.slice/cron.service")
        return entry

    return {
        "web1": {"report": report([kill("collector-agent", 2), kill(SCRIPT_NAME, 5)], host="web1"), "error": None},
        "web2": {"report": report([kill("db-agent", 9, sender=IMG_NAME)], host="web2"), "error": None},
        IMG_NAME: {"report": None, "error": "unreachable: " + SCRIPT_NAME},
    }


def open_page(browser, path):
    from selenium.common.exceptions import NoAlertPresentException

    browser.get("file://" + str(path))
    assert browser.title == TITLE
    assert browser.execute_script("return typeof window.pwned") == "undefined"
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 (raises when there is none)
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe


def shown(browser, selector):
    from selenium.webdriver.common.by import By

    return [element for element in browser.find_elements(By.CSS_SELECTOR, selector) if element.is_displayed()]


def test_the_page_shows_every_host_and_kill_and_hostile_names_as_text(browser, tmp_path):
    from selenium.webdriver.common.by import By

    written = report_files.write_reports(str(tmp_path / "reports"), hostile_fleet())
    open_page(browser, written["summary_html"])
    hosts = [element.find_element(By.TAG_NAME, "h2").text for element in shown(browser, "section.host")]
    assert hosts == [IMG_NAME, "web1", "web2"]
    kills = shown(browser, "article.kill")
    assert [element.get_attribute("data-host") for element in kills] == ["web1", "web1", "web2"]
    victims = [element.find_element(By.CSS_SELECTOR, ".tree .comm").text for element in kills]
    assert victims == ["collector-agent", SCRIPT_NAME, "db-agent"]
    assert IMG_NAME in kills[2].text and "argv\n%s -9 db-agent" % IMG_NAME in kills[2].text
    assert "systemd unit cron.service" in kills[0].text
    assert browser.find_elements(By.TAG_NAME, "img") == [] and len(browser.find_elements(By.TAG_NAME, "script")) == 1
    overview = [row.text for row in shown(browser, "#overview tbody tr")]
    assert overview[0] == "%s unreachable: %s" % (IMG_NAME, SCRIPT_NAME)
    assert overview[1].startswith("web1 2 2026-11-26T07:01:02.000000Z 2026-11-26T07:01:05.000000Z none ftrace")
    assert [element.text.split(" ")[1] for element in shown(browser, "#timeline-list li")] == ["web1:", "web1:",
                                                                                             "web2:"]
    assert len(shown(browser, "#timeline .dot")) == 3


def test_the_filters_work(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    written = report_files.write_reports(str(tmp_path / "reports"), hostile_fleet())
    open_page(browser, written["summary_html"])
    counter = browser.find_element(By.ID, "kills-shown")
    assert counter.text == "3"
    Select(browser.find_element(By.ID, "host-filter")).select_by_value("web2")
    assert [element.get_attribute("data-host") for element in shown(browser, "article.kill")] == ["web2"]
    assert [element.get_attribute("data-host") for element in shown(browser, "section.host")] == ["web2"]
    assert len(shown(browser, "#timeline-list li")) == 1 and counter.text == "1"
    Select(browser.find_element(By.ID, "host-filter")).select_by_value("")
    victim = browser.find_element(By.ID, "victim-filter")
    victim.send_keys("AGENT")
    assert [element.get_attribute("data-victim") for element in shown(browser, "article.kill")] == [
        "collector-agent", "db-agent"]
    assert counter.text == "2"
    victim.clear()
    victim.send_keys("<script>")
    assert [element.get_attribute("data-victim") for element in shown(browser, "article.kill")] == [SCRIPT_NAME]
    assert browser.title == TITLE and browser.execute_script("return typeof window.pwned") == "undefined"
    Select(browser.find_element(By.ID, "host-filter")).select_by_value(IMG_NAME)
    assert shown(browser, "article.kill") == [] and counter.text == "0"
    assert [element.get_attribute("data-host") for element in shown(browser, "section.host")] == [IMG_NAME]


def test_the_page_of_a_real_collect(browser, path_like_collect):
    from selenium.webdriver.common.by import By

    _tmp_path, report_dir, _run = path_like_collect
    copy_dir = report_dir.parent / "opened"
    copy_dir.mkdir()
    shutil.copy(str(report_dir / "summary.html"), str(copy_dir / "summary.html"))  # from disk, anywhere
    open_page(browser, copy_dir / "summary.html")
    sections = shown(browser, "section.host")
    assert [element.find_element(By.TAG_NAME, "h2").text for element in sections] == ["../x", "a/b", BLOCKED]
    assert "Report not written: %s/%s is not a directory of ours" % (report_dir, BLOCKED) in sections[2].text
    assert all("No kill with an armed signal was recorded." in element.text for element in sections)
    assert "3 hosts, 0 kills; report not written for %s." % BLOCKED == browser.find_element(By.ID, "fleet-counts").text
