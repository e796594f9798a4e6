#!/usr/bin/env python3
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Assemble the collection sigsleuth.sigsleuth from this repository's own files, then build its tarball.

The repository keeps its own layout (library/, module_utils/, roles/, playbooks/); the collection is made from
it, the way linux-system-roles' lsr_role2collection makes collections from roles:

* library/*.py -> plugins/modules/, module_utils/*.py -> plugins/module_utils/, with every reference to
  ``ansible.module_utils.sigsleuth_*`` (imports, and names a module reads at run time) rewritten to
  ``ansible_collections.<namespace>.<name>.plugins.module_utils.sigsleuth_*``;
* roles/sigsleuth/filter_plugins/*.py -> plugins/filter/ and roles/sigsleuth/action_plugins/*.py ->
  plugins/action/ (a role inside a collection carries no plugins);
* roles/sigsleuth -> roles/sigsleuth, and playbooks/*.yml (except demo.yml, which needs the repository's test
  harness) -> playbooks/, with our modules, filters and role called by their fully qualified names;
* galaxy.yml, meta/runtime.yml, changelogs/, LICENSE, the report schema and collection/README.md and
  collection/tests/config.yml as they are.

YAML is rewritten in place, token by token, at the positions PyYAML's composer reports, so comments, folding
and quoting stay exactly as written. Whatever the build cannot rewrite with certainty stops it with the
reason. Then ``ansible-galaxy collection build`` writes build/<namespace>-<name>-<version>.tar.gz, and the
path is printed.

    python collection/build.py [--dest build] [--ansible-galaxy PATH] [--no-tarball]
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROLE = "sigsleuth"
# Playbooks that only make sense inside the repository (demo.yml copies tests/scenarios/ to the host).
REPOSITORY_ONLY_PLAYBOOKS = ("demo.yml",)
# The role's plugin directories: their files become the collection's plugins (plugins/filter, plugins/action).
ROLE_PLUGIN_DIRS = ("filter_plugins", "action_plugins")
# Task keywords that hold lists of tasks (or plays' task lists).
TASK_LISTS = ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers")
ROLE_INCLUDES = ("include_role", "import_role", "ansible.builtin.include_role", "ansible.builtin.import_role",
                 "ansible.legacy.include_role", "ansible.legacy.import_role")
# Copied as they are: (source relative to ROOT, destination relative to the collection root).
VERBATIM = (
    ("galaxy.yml", "galaxy.yml"),
    ("meta/runtime.yml", "meta/runtime.yml"),
    ("LICENSE", "LICENSE"),
    ("collection/README.md", "README.md"),
    ("collection/tests/config.yml", "tests/config.yml"),
    ("schema/report.schema.json", "docs/report.schema.json"),
    ("changelogs/config.yaml", "changelogs/config.yaml"),
    ("changelogs/changelog.yaml", "changelogs/changelog.yaml"),
)


class BuildError(Exception):
    """The collection cannot be built as asked; the message says why."""


# ---------------------------------------------------------------- metadata

def galaxy_metadata(root=ROOT):
    with open(os.path.join(root, "galaxy.yml"), encoding="utf-8") as handle:
        meta = yaml.safe_load(handle)
    for key in ("namespace", "name", "version"):
        if not meta.get(key):
            raise BuildError("galaxy.yml has no %s" % key)
    return meta


class Names:
    """What the build rewrites, found in the repository itself."""

    def __init__(self, root, namespace, name):
        self.collection = "%s.%s" % (namespace, name)
        self.module_utils_package = "ansible_collections.%s.%s.plugins.module_utils" % (namespace, name)
        self.modules = sorted(stem(path) for path in python_files(os.path.join(root, "library")))
        self.module_utils = sorted(stem(path) for path in python_files(os.path.join(root, "module_utils")))
        self.filter_files = python_files(os.path.join(root, "roles", ROLE, "filter_plugins"))
        self.filters = sorted(name for path in self.filter_files for name in filter_names(path))
        self.action_files = python_files(os.path.join(root, "roles", ROLE, "action_plugins"))
        self.role = ROLE

    def fqcn(self, short):
        return "%s.%s" % (self.collection, short)


def python_files(directory):
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if name.endswith(".py") and name != "__init__.py")


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def filter_names(path):
    """The keys of the dict FilterModule.filters() returns, read from the source without running it."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "filters":
            for statement in ast.walk(node):
                if isinstance(statement, ast.Return) and isinstance(statement.value, ast.Dict):
                    names = [key.value for key in statement.value.keys if isinstance(key, ast.Constant)]
                    if len(names) != len(statement.value.keys):
                        break
                    return names
    raise BuildError("%s: FilterModule.filters() must return a literal dict of filter names" % path)


# ---------------------------------------------------------------- Python: module_utils references

def rewrite_python(text, names, path):
    """Every ansible.module_utils.sigsleuth_* reference, in imports and in strings, to the collection's package."""
    def dotted(match):
        if match.group(1) not in names.module_utils:
            raise BuildError("%s: %s names no file in module_utils/" % (path, match.group(0)))
        return "%s.%s" % (names.module_utils_package, match.group(1))

    def from_package(match):
        imported = [part.strip() for part in match.group(2).strip("()").split(",") if part.strip()]
        bare = [part.split(" as ")[0].strip() for part in imported]
        ours = [name for name in bare if name.startswith("sigsleuth_")]
        if not ours:
            return match.group(0)
        if len(ours) != len(bare):
            raise BuildError("%s: split `%s`: sigsleuth_* and ansible's own module_utils in one import"
                             % (path, match.group(0).strip()))
        missing = [name for name in ours if name not in names.module_utils]
        if missing:
            raise BuildError("%s: %s name no file in module_utils/" % (path, ", ".join(missing)))
        return "%sfrom %s import %s" % (match.group(1), names.module_utils_package, match.group(2))

    text = re.sub(r"^(\s*)from\s+ansible\.module_utils\s+import\s+(\([^)]*\)|[^\n#]+)", from_package, text,
                  flags=re.M)
    text = re.sub(r"\bansible\.module_utils\.(sigsleuth_\w+)", dotted, text)
    left = re.findall(r"ansible[./]module_utils[./]sigsleuth_\w+", text)
    if left:
        raise BuildError("%s: cannot rewrite %s" % (path, ", ".join(sorted(set(left)))))
    return text


# ---------------------------------------------------------------- YAML: FQCN in tasks and plays

class YamlRewrite:
    """Edits at exact (line, column) positions of one YAML file, applied right to left."""

    def __init__(self, text, path, names):
        self.text = text
        self.path = path
        self.names = names
        self.edits = []

    def replace_token(self, mark, old, new):
        self.edits.append((mark.line, mark.column, old, new))

    def apply(self):
        lines = self.text.split("\n")
        for line, column, old, new in sorted(self.edits, reverse=True):
            current = lines[line]
            quote = current[column:column + 1]
            start = column + 1 if quote in ("'", '"') else column
            if current[start:start + len(old)] != old:
                raise BuildError("%s:%d: expected %r at column %d, found %r"
                                 % (self.path, line + 1, old, column + 1, current[start:start + len(old)]))
            lines[line] = current[:start] + new + current[start + len(old):]
        return "\n".join(lines)


def mapping_items(node):
    return [(key, value) for key, value in node.value if isinstance(key, yaml.ScalarNode)]


def walk_tasks(node, rewrite):
    """Each task (or play) in a task list: our modules and role by FQCN; then its nested task lists."""
    if not isinstance(node, yaml.SequenceNode):
        return
    for item in node.value:
        if not isinstance(item, yaml.MappingNode):
            continue
        for key, value in mapping_items(item):
            if key.value in rewrite.names.modules:
                rewrite.replace_token(key.start_mark, key.value, rewrite.names.fqcn(key.value))
            elif key.value in ROLE_INCLUDES:
                role_reference(value, rewrite)
            elif key.value == "roles" and isinstance(value, yaml.SequenceNode):
                for entry in value.value:
                    role_reference(entry, rewrite)
            elif key.value in TASK_LISTS:
                walk_tasks(value, rewrite)


def role_reference(node, rewrite):
    """`name: sigsleuth` (include_role/import_role, a roles: entry) or a bare `- sigsleuth` in roles:."""
    if isinstance(node, yaml.ScalarNode):
        target = node
    elif isinstance(node, yaml.MappingNode):
        found = [value for key, value in mapping_items(node) if key.value in ("name", "role")]
        target = found[0] if found else None
    else:
        target = None
    if isinstance(target, yaml.ScalarNode) and target.value == rewrite.names.role:
        rewrite.replace_token(target.start_mark, target.value, rewrite.names.fqcn(target.value))


def filter_pattern(names):
    return re.compile(r"(\|\s*)(%s)\b" % "|".join(re.escape(name) for name in names)) if names else None


def rewrite_yaml(text, path, names, tasks):
    """Our modules, role and filters by FQCN. `tasks`: the file holds tasks or plays (not vars, not meta)."""
    if tasks:
        rewrite = YamlRewrite(text, path, names)
        walk_tasks(yaml.compose(text, Loader=yaml.SafeLoader), rewrite)
        text = rewrite.apply()
    pattern = filter_pattern(names.filters)
    if pattern:
        text = pattern.sub(lambda match: match.group(1) + names.fqcn(match.group(2)), text)
    check_yaml(text, path, names, tasks)
    return text


def check_yaml(text, path, names, tasks):
    """Nothing of ours is left to be resolved by a short name."""
    pattern = filter_pattern(names.filters)
    if pattern and pattern.search(text):
        raise BuildError("%s: filter %s is still called by its short name" % (path, pattern.search(text).group(2)))
    if not tasks:
        return
    problems = []

    def visit(node):
        if isinstance(node, yaml.SequenceNode):
            for item in node.value:
                visit(item)
        elif isinstance(node, yaml.MappingNode):
            for key, value in mapping_items(node):
                if key.value == "vars":
                    continue  # variable names (sigsleuth_watch is a role variable too), not modules
                if key.value in names.modules:
                    problems.append("module %s at line %d" % (key.value, key.start_mark.line + 1))
                if key.value in ("name", "role") and isinstance(value, yaml.ScalarNode) and value.value == names.role:
                    problems.append("role %s at line %d" % (value.value, value.start_mark.line + 1))
                visit(value)

    visit(yaml.compose(text, Loader=yaml.SafeLoader))
    if problems:
        raise BuildError("%s: still called by a short name: %s" % (path, "; ".join(problems)))


def is_task_file(relative):
    """Role files that hold tasks (or handlers); playbooks are handled apart."""
    return relative.split(os.sep)[0] in ("tasks", "handlers")


# ---------------------------------------------------------------- assembly

def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def rewrite_examples(text, names, path):
    """A module's EXAMPLES call the modules by FQCN too, as a collection's users call them."""
    def examples(match):
        return match.group(1) + rewrite_yaml(match.group(2), path + " (EXAMPLES)", names, tasks=True) + match.group(3)

    return re.sub(r'^(EXAMPLES = r?""")(.*?)(""")', examples, text, count=1, flags=re.M | re.S)


def copy_python(sources, destination, names, modules=False):
    for source in sources:
        text = rewrite_python(read(source), names, source)
        if modules:
            text = rewrite_examples(text, names, source)
        write(os.path.join(destination, os.path.basename(source)), text)


def copy_role(root, collection_root, names):
    source_role = os.path.join(root, "roles", ROLE)
    for directory, subdirectories, files in os.walk(source_role):
        relative_dir = os.path.relpath(directory, source_role)
        if relative_dir.split(os.sep)[0] in ROLE_PLUGIN_DIRS:
            continue
        subdirectories[:] = sorted(name for name in subdirectories if name != "__pycache__")
        for name in sorted(files):
            source = os.path.join(directory, name)
            relative = os.path.normpath(os.path.join(relative_dir, name))
            target = os.path.join(collection_root, "roles", ROLE, relative)
            if name.endswith((".yml", ".yaml")):
                write(target, rewrite_yaml(read(source), source, names, is_task_file(relative)))
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(source, target)


def collection_playbooks(root):
    directory = os.path.join(root, "playbooks")
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if name.endswith(".yml") and name not in REPOSITORY_ONLY_PLAYBOOKS)


def assemble(root=ROOT, dest=None):
    """Build the collection tree under <dest>/ansible_collections/<namespace>/<name>; returns its path."""
    meta = galaxy_metadata(root)
    dest = dest or os.path.join(root, "build")
    collection_root = os.path.join(dest, "ansible_collections", meta["namespace"], meta["name"])
    if os.path.exists(collection_root):
        shutil.rmtree(collection_root)
    names = Names(root, meta["namespace"], meta["name"])

    for source, target in VERBATIM:
        if not os.path.exists(os.path.join(root, source)):
            raise BuildError("%s is missing" % source)
        os.makedirs(os.path.dirname(os.path.join(collection_root, target)), exist_ok=True)
        shutil.copy2(os.path.join(root, source), os.path.join(collection_root, target))
    fragments = os.path.join(root, "changelogs", "fragments")
    shutil.copytree(fragments, os.path.join(collection_root, "changelogs", "fragments"))

    copy_python(python_files(os.path.join(root, "library")),
                os.path.join(collection_root, "plugins", "modules"), names, modules=True)
    copy_python(python_files(os.path.join(root, "module_utils")),
                os.path.join(collection_root, "plugins", "module_utils"), names)
    copy_python(names.filter_files, os.path.join(collection_root, "plugins", "filter"), names)
    copy_python(names.action_files, os.path.join(collection_root, "plugins", "action"), names)
    copy_role(root, collection_root, names)
    for source in collection_playbooks(root):
        write(os.path.join(collection_root, "playbooks", os.path.basename(source)),
              rewrite_yaml(read(source), source, names, tasks=True))
    return collection_root


def build_tarball(collection_root, output_dir, ansible_galaxy):
    proc = subprocess.run([ansible_galaxy, "collection", "build", "--force", "--output-path", output_dir,
                           collection_root], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError("ansible-galaxy collection build failed (rc %d):\n%s%s"
                         % (proc.returncode, proc.stdout, proc.stderr))
    meta = galaxy_metadata(collection_root)
    tarball = os.path.join(output_dir, "%s-%s-%s.tar.gz" % (meta["namespace"], meta["name"], meta["version"]))
    if not os.path.isfile(tarball):
        raise BuildError("ansible-galaxy collection build wrote no %s:\n%s" % (tarball, proc.stdout))
    return tarball


def default_ansible_galaxy():
    beside = os.path.join(os.path.dirname(sys.executable), "ansible-galaxy")
    return beside if os.access(beside, os.X_OK) else (shutil.which("ansible-galaxy") or "ansible-galaxy")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", default=os.path.join(ROOT, "build"),
                        help="where ansible_collections/ and the tarball go (default: build/)")
    parser.add_argument("--ansible-galaxy", default=default_ansible_galaxy())
    parser.add_argument("--no-tarball", action="store_true", help="assemble the tree only")
    args = parser.parse_args(argv)
    dest = os.path.abspath(args.dest)
    try:
        collection_root = assemble(ROOT, dest)
        if args.no_tarball:
            print(collection_root)
            return 0
        print(build_tarball(collection_root, dest, args.ansible_galaxy))
    except BuildError as exc:
        print("make collection: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
