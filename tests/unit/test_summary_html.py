"""summary.html as markup: self-contained, one script of ours (allowed by its hash), and every
process-derived string escaped - hostile names end up as text, never as elements or attributes.
(tests/integration/test_report_files.py checks the page in a real headless Chromium.)"""

import base64
import copy
import hashlib
import html.parser
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "roles", "sigsleuth", "filter_plugins"))

from sigsleuth_summary import cgroup_label, sigsleuth_summary, sigsleuth_summary_html, visible  # noqa: E402
from test_summary_filter import HOSTILE, SEED_KILL, process, report  # noqa: E402

HOSTILE_HTML = HOSTILE + [
    "<script>document.title='pwned'</script>",
    "<img src=x onerror=alert(1)>",
    "\"><svg onload=alert(1)>",
    "'><b>bold</b>",
    "</script><script>alert(1)</script>",
    "&lt;entity&gt; &amp;",
    "javascript:alert(1)",
]


class Page(html.parser.HTMLParser):
    """Every element with its attributes, the scripts' text, and the page's text."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.elements = []
        self.scripts = []
        self.text = []
        self._in_script = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)


def fleet(name):
    victim = dict(process(7, name, "/tmp/" + name), argv=[name, "--flag=" + name], uid=0, auid=1000,
                  cgroup="/system.slice/" + name + ".service")
    kill = dict(copy.deepcopy(SEED_KILL), victim=victim, sender=dict(process(8, name), argv=["kill", name]),
                ancestry=[process(9, name)], gaps=[name], evidence=["ftrace:" + name])
    return {name: {"report": report([kill], host=name), "error": name, "write_error": name},
            "web1": {"report": report([SEED_KILL]), "error": None},
            "gone": {}}


@pytest.mark.parametrize("name", HOSTILE_HTML)
def test_hostile_names_are_text_never_markup(name):
    text = sigsleuth_summary_html(fleet(name))
    page = Page(text)
    tags = {tag for tag, _attrs in page.elements}
    assert tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "div", "label",
                    "select", "option", "input", "span", "table", "thead", "tbody", "tr", "th", "td", "a",
                    "time", "ol", "ul", "li", "b", "small", "section", "article", "dl", "dt", "dd", "code",
                    "script"}, tags
    for tag, attrs in page.elements:
        assert not [key for key in attrs if key.startswith("on")], (tag, attrs)
        if tag == "a":
            assert attrs["href"].startswith("#host-"), attrs
    assert len(page.scripts) == 1 and "pwned" not in page.scripts[0] and "alert" not in page.scripts[0]
    # The name is there, as text, with its invisible characters shown.
    shown = visible(name)
    assert shown in "".join(page.text)
    assert "<title>sigsleuth summary</title>" in text
    if any(char in name for char in "<>\"'&"):
        assert name not in text.replace("<script>%s</script>" % page.scripts[0], "")


def test_the_page_is_self_contained_and_allows_only_its_own_script():
    text = sigsleuth_summary_html(fleet("agent"))
    page = Page(text)
    policy = [attrs["content"] for tag, attrs in page.elements
              if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"][0]
    assert "default-src 'none'" in policy
    digest = base64.b64encode(hashlib.sha256(page.scripts[0].encode("utf-8")).digest()).decode()
    assert "script-src 'sha256-%s'" % digest in policy
    assert not re.search(r"\b(src|href)=\"(?!#)", text)
    assert "url(" not in text and "@import" not in text and "http://" not in text and "https://" not in text


def test_overview_tree_facts_and_timeline():
    kill = copy.deepcopy(SEED_KILL)
    kill["sender"].update(argv=["/usr/bin/kill", "-9", "1234"], uid=0, auid=1000,
                          cgroup="/system.slice/cron.service")
    kill["victim"].update(cgroup="/system.slice/docker-" + "ab" * 32 + ".scope", container_id="ab" * 32)
    later = dict(copy.deepcopy(SEED_KILL), time="2026-11-26T07:03:00.000000Z")
    outcomes = {"web1": {"report": report([kill, later]), "error": None},
                "db1": {"report": None, "error": "unreachable: ssh: connect to host db1 port 22: refused"}}
    page = Page(sigsleuth_summary_html(outcomes))
    text = " ".join(" ".join(page.text).split())
    assert "web1 2 2026-11-26T07:01:02.123456Z 2026-11-26T07:03:00.000000Z none ftrace" in text
    assert "db1 unreachable: ssh: connect to host db1 port 22: refused" in text
    assert "argv /usr/bin/kill -9 1234 uid 0 auid 1000 cgroup systemd unit cron.service" in text
    assert "cgroup container abababababab" in text
    kills = [attrs for tag, attrs in page.elements if tag == "article"]
    assert [attrs["data-host"] for attrs in kills] == ["web1", "web1"]
    assert [attrs["data-victim"] for attrs in kills] == ["agent", "agent"]
    dots = [attrs for tag, attrs in page.elements if tag == "span" and attrs.get("class") == "dot"]
    assert [dot["style"] for dot in dots] == ["left: 0.00%", "left: 100.00%"]
    options = [attrs.get("value") for tag, attrs in page.elements if tag == "option"]
    assert options == ["", "db1", "web1"]


def test_markdown_shows_argv_ids_and_cgroup_too():
    kill = copy.deepcopy(SEED_KILL)
    kill["sender"].update(argv=["/usr/bin/kill", "-9", "1_2"], uid=0, cgroup="/system.slice/cron.service")
    text = sigsleuth_summary({"web1": {"report": report([kill]), "error": None}})
    assert ("  - ← sender kill\\[1250\\] /usr/bin/kill (exited, started 2026-11-26T07:01:02.100000Z); argv: "
            "/usr/bin/kill -9 1\\_2; uid 0; systemd unit cron.service") in text.split("\n")


@pytest.mark.parametrize("cgroup, container, label", [
    ("/system.slice/nginx.service", None, "systemd unit nginx.service"),
    ("/user.slice/user-1000.slice/session-3.scope", None, "systemd unit session-3.scope"),
    ("/user.slice/user-1000.slice", None, "systemd slice user-1000.slice"),
    ("/docker/" + "0f" * 32, "0f" * 32, "container 0f0f0f0f0f0f"),
    ("/sigsleuth-test/job", None, "cgroup /sigsleuth-test/job"),
    (None, None, None),
])
def test_cgroup_labels(cgroup, container, label):
    assert cgroup_label(cgroup, container) == label
