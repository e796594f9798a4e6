# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for the get-pip.py that ansible-test downloads to bootstrap pip into its virtual environments.

ansible-test fetches that script from its own file server (not a package registry), which this project's
machines cannot reach. collection/sanity.py puts this file where ansible-test caches the download
(~/.ansible/test/cache/get_pip_<version>.py, under the HOME it gives ansible-test), so ansible-test finds it
"cached" and never downloads. ansible-test runs it like get-pip.py: with the pip options and the exact
packages to install (e.g. ``--disable-pip-version-check pip==24.2 --no-setuptools --no-wheel``).

It runs pip from the wheel that Python itself bundles (ensurepip's, or Debian's python-wheels), which needs
no network, and has that pip install the requested packages from the package index pip is configured with
(the bundled wheel directory is offered too, so a matching bundled pip installs with no download at all).
"""

import glob
import os
import re
import subprocess
import sys

# get-pip.py's own options; pip itself does not know them.
GET_PIP_OPTIONS = {"--no-setuptools": "setuptools", "--no-wheel": "wheel"}


def bundled_pip_wheel():
    """The newest pip wheel this Python ships: ensurepip's own bundle, else Debian/Ubuntu's python-wheels
    (a distribution's Python may have no bundle)."""
    try:
        import ensurepip
        found = glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), "_bundled", "pip-*.whl"))
    except ImportError:
        found = []
    found = found or glob.glob("/usr/share/python-wheels/pip-*.whl")
    return max(found, key=wheel_version) if found else None


def wheel_version(path):
    """pip-23.2.1-py3-none-any.whl -> (23, 2, 1)."""
    return tuple(int(part) for part in re.findall(r"\d+", os.path.basename(path).split("-")[1]))


def main(argv):
    wheel = bundled_pip_wheel()
    if wheel is None:
        print("get_pip stand-in: %s has no bundled pip wheel (ensurepip)" % sys.executable, file=sys.stderr)
        return 1
    args = [arg for arg in argv if arg not in GET_PIP_OPTIONS]
    # pip runs from inside its wheel (a zip on sys.path): the documented way to bootstrap it.
    command = [sys.executable, os.path.join(wheel, "pip"), "install", "--find-links", os.path.dirname(wheel)] + args
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
