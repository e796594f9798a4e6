#!/usr/bin/env python3
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`make sanity`: ansible-test sanity on the built collection, as shipped, on this machine, with no download
that is not from a package registry.

1. The tarball is installed with ``ansible-galaxy collection install -p`` into a scratch directory outside
   this repository (inside it, ansible-test would take the repository's git for the collection's and list no
   files: build/ is ignored).
2. ansible-test runs with HOME set to .cache/ansible-test/home (so its virtual environments are kept between
   runs and nothing is written to the real home), with the stand-in collection/get_pip.py placed where it
   caches the pip bootstrap script it would otherwise download from its own file server.
3. PATH starts with one interpreter of each Python version the collection supports (3.9 to 3.13 here, found
   under pyenv or on PATH; SIGSLEUTH_SANITY_PYTHONS="/path/python3.9 ..." overrides), so compile and import
   run on each; a missing one fails the run rather than being skipped.
4. ``ansible-test sanity --local`` runs every test that applies (validate-modules, pep8, pylint, compile,
   import, yamllint, ansible-doc, changelog, runtime-metadata, ...). The first run installs each test's
   pinned requirements into its virtual environment from the package index; later runs reuse them.

    python collection/sanity.py TARBALL [ansible-test sanity options, e.g. --test pep8]
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HOME = os.path.join(ROOT, ".cache", "ansible-test", "home")
# Target Pythons the modules support (collection/tests/config.yml says >=3.9); the controller ones are among them.
PYTHON_VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
PYENV_VERSIONS = os.path.expanduser("~/.pyenv/versions")


def venv_tool(name):
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.access(beside, os.X_OK) else shutil.which(name)


def find_pythons():
    """{version: interpreter}: SIGSLEUTH_SANITY_PYTHONS, else pyenv's newest patch of each, else PATH."""
    found = {}
    for path in os.environ.get("SIGSLEUTH_SANITY_PYTHONS", "").split():
        found[python_version(path)] = path
    for version in PYTHON_VERSIONS:
        if version in found:
            continue
        candidates = sorted(glob.glob(os.path.join(PYENV_VERSIONS, version + ".*", "bin", "python" + version)),
                            key=lambda path: [int(part) for part in re.findall(r"\d+", path.split(os.sep)[-3])])
        on_path = shutil.which("python" + version)
        if on_path and "/shims/" not in on_path:
            candidates.append(on_path)
        usable = [path for path in candidates if python_version(path) == version]
        if usable:
            found[version] = usable[-1]
    return found


def python_version(path):
    try:
        proc = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def is_pyenv_shims(entry):
    """pyenv's shims (and pyenv-virtualenv's) offer every installed Python."""
    return ".pyenv" in entry and entry.rstrip(os.sep).endswith("shims")


def bootstrap_pip_version(ansible_test):
    """The pip version ansible-test bootstraps into its virtual environments (its get-pip script's name)."""
    proc = subprocess.run([sys.executable, "-c", "import ansible_test, os; print(os.path.dirname(ansible_test.__file__))"],
                          capture_output=True, text=True, check=True)
    path = os.path.join(proc.stdout.strip(), "_internal", "python_requirements.py")
    with open(path) as handle:
        match = re.search(r"default_packages = dict\(\s*pip='([0-9.]+)'", handle.read())
    if not match:
        raise SystemExit("sanity: cannot tell which pip %s bootstraps (%s changed?)" % (ansible_test, path))
    return match.group(1)


def place_get_pip(pip_version):
    cache = os.path.join(HOME, ".ansible", "test", "cache")
    os.makedirs(cache, exist_ok=True)
    target = os.path.join(cache, "get_pip_%s.py" % pip_version.replace(".", "_"))
    shutil.copyfile(os.path.join(HERE, "get_pip.py"), target)
    return target


def install(tarball, scratch):
    galaxy = venv_tool("ansible-galaxy")
    subprocess.run([galaxy, "collection", "install", "--force", "-p", scratch, tarball], check=True,
                   stdout=subprocess.DEVNULL)
    manifest = glob.glob(os.path.join(scratch, "ansible_collections", "*", "*", "MANIFEST.json"))
    if len(manifest) != 1:
        raise SystemExit("sanity: %s did not install as one collection" % tarball)
    return os.path.dirname(manifest[0])


def main(argv):
    if not argv or not argv[0].endswith(".tar.gz"):
        print(__doc__, file=sys.stderr)
        return 2
    tarball, extra = os.path.abspath(argv[0]), argv[1:]
    pythons = find_pythons()
    missing = [version for version in PYTHON_VERSIONS if version not in pythons]
    if missing:
        print("sanity: no interpreter for Python %s (set SIGSLEUTH_SANITY_PYTHONS)" % ", ".join(missing),
              file=sys.stderr)
        return 1
    ansible_test = venv_tool("ansible-test")
    get_pip = place_get_pip(bootstrap_pip_version(ansible_test))
    print("sanity: pip bootstrap stand-in at %s; Pythons %s" % (get_pip, " ".join(
        "%s=%s" % item for item in sorted(pythons.items()))), flush=True)

    # Only the chosen interpreters: pyenv's shims would offer versions the collection does not support.
    path = [os.path.dirname(python) for _, python in sorted(pythons.items())] + [os.path.dirname(ansible_test)]
    path += [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if not is_pyenv_shims(entry)]
    env = dict(os.environ, HOME=HOME, PATH=os.pathsep.join(path))
    env.pop("PYTHONPATH", None)
    scratch = tempfile.mkdtemp(prefix="sigsleuth-sanity-")
    try:
        collection = install(tarball, scratch)
        command = [ansible_test, "sanity", "--local", "--color", "no"] + extra
        print("sanity: %s (in %s)" % (" ".join(command), collection), flush=True)
        return subprocess.call(command, cwd=collection, env=env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
