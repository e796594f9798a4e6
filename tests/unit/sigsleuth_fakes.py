"""Stand-ins for the kernel in module unit tests: a fake tracefs tree, a fake /proc, and a module runner.

The fake tracefs is a directory of regular files. FakeKernel patches the two places where tracefs differs from
a plain directory: writes (a clock name selects it, "0" clears a filter, sizes round up, a bad filter is
rejected) and mkdir/rmdir of an instance (the kernel populates and removes it as a whole).
"""

import contextlib
import errno
import json
import os
import shutil
from unittest import mock

import yaml

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible.module_utils import sigsleuth_tracefs

CLOCKS = ["local", "global", "counter", "uptime", "perf", "mono", "mono_raw", "boot", "tai", "x86-tsc"]

FORMAT_HEAD = (
    "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
    "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n"
)
EVENT_FIELDS = {
    "signal/signal_generate": ["int sig", "int errno", "int code", "char comm[16]", "pid_t pid", "int group",
                               "int result"],
    "sched/sched_process_fork": ["char parent_comm[16]", "pid_t parent_pid", "char child_comm[16]",
                                 "pid_t child_pid"],
    "sched/sched_process_exec": ["__data_loc char[] filename", "pid_t pid", "pid_t old_pid"],
    "sched/sched_process_exit": ["char comm[16]", "pid_t pid", "int prio"],
    "task/task_newtask": ["pid_t pid", "char comm[16]", "unsigned long clone_flags"],
    "task/task_rename": ["pid_t pid", "char oldcomm[16]", "char newcomm[16]"],
    "syscalls/sys_enter_kill": ["int __syscall_nr", "pid_t pid", "int sig"],
    "syscalls/sys_enter_tkill": ["int __syscall_nr", "pid_t pid", "int sig"],
    "syscalls/sys_enter_tgkill": ["int __syscall_nr", "pid_t tgid", "pid_t pid", "int sig"],
    "syscalls/sys_enter_pidfd_send_signal": ["int __syscall_nr", "int pidfd", "int sig", "siginfo_t * info",
                                             "unsigned int flags"],
    "syscalls/sys_enter_rt_sigqueueinfo": ["int __syscall_nr", "pid_t pid", "int sig", "siginfo_t * uinfo"],
    "syscalls/sys_enter_rt_tgsigqueueinfo": ["int __syscall_nr", "pid_t tgid", "pid_t pid", "int sig",
                                             "siginfo_t * uinfo"],
    "oom/mark_victim": ["int pid", "__data_loc char[] comm", "unsigned long total_vm"],
    "syscalls/sys_exit_kill": ["int __syscall_nr", "long ret"],
    "syscalls/sys_exit_tkill": ["int __syscall_nr", "long ret"],
    "syscalls/sys_exit_tgkill": ["int __syscall_nr", "long ret"],
    "syscalls/sys_exit_pidfd_send_signal": ["int __syscall_nr", "long ret"],
    "syscalls/sys_exit_rt_sigqueueinfo": ["int __syscall_nr", "long ret"],
    "syscalls/sys_exit_rt_tgsigqueueinfo": ["int __syscall_nr", "long ret"],
    "syscalls/sys_enter_write": ["int __syscall_nr", "unsigned int fd", "const char * buf", "size_t count"],
    "syscalls/sys_enter_prlimit64": ["int __syscall_nr", "pid_t pid", "unsigned int resource",
                                     "const struct rlimit64 * new_rlim", "struct rlimit64 * old_rlim"],
    "syscalls/sys_enter_setrlimit": ["int __syscall_nr", "unsigned int resource", "struct rlimit * rlim"],
    "syscalls/sys_enter_openat": ["int __syscall_nr", "int dfd", "const char * filename", "int flags",
                                  "umode_t mode"],
    "syscalls/sys_enter_open": ["int __syscall_nr", "const char * filename", "int flags", "umode_t mode"],
    "syscalls/sys_enter_openat2": ["int __syscall_nr", "int dfd", "const char * filename",
                                   "struct open_how * how", "size_t usize"],
    "cgroup/cgroup_attach_task": ["int dst_root", "int dst_level", "u64 dst_id", "int pid",
                                  "__data_loc char[] dst_path", "__data_loc char[] comm"],
    # Events we never enable, so a test can see they stay untouched.
    "sched/sched_switch": ["char prev_comm[16]", "pid_t prev_pid"],
}

STATS = (
    "entries: 12\noverrun: 3\ncommit overrun: 0\nbytes: 480\noldest event ts:   263.807203\n"
    "now ts:   270.000001\ndropped events: 1\nread events: 0\n"
)


def _write_file(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def _read_file(path):
    with open(path) as handle:
        return handle.read()


def _clock_line(selected):
    return " ".join("[%s]" % clock if clock == selected else clock for clock in CLOCKS) + "\n"


def populate_buffer(path, events):
    """The files a trace buffer (top level or instance) has, as the kernel shows them fresh."""
    _write_file(os.path.join(path, "trace_clock"), _clock_line("local"))
    _write_file(os.path.join(path, "buffer_size_kb"), "1410\n")
    _write_file(os.path.join(path, "tracing_on"), "1\n")
    _write_file(os.path.join(path, "trace"), "# tracer: nop\n")
    _write_file(os.path.join(path, "options", "record-tgid"), "0\n")
    _write_file(os.path.join(path, "options", "overwrite"), "1\n")
    for cpu in (0, 1):
        _write_file(os.path.join(path, "per_cpu", "cpu%d" % cpu, "stats"), STATS)
    for event in events:
        directory = os.path.join(path, "events", event)
        fields = "".join("\tfield:%s;\toffset:8;\tsize:4;\tsigned:1;\n" % field for field in EVENT_FIELDS[event])
        _write_file(os.path.join(directory, "format"),
                    "name: %s\nID: 1\nformat:\n%s%s" % (event.split("/")[1], FORMAT_HEAD, fields))
        _write_file(os.path.join(directory, "enable"), "0\n")
        _write_file(os.path.join(directory, "filter"), "none\n")


def snapshot_tree(root):
    """Every file under root with its content: compare before/after to prove nothing was touched."""
    contents = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            contents[os.path.relpath(path, root)] = _read_file(path)
    return contents


class FakeKernel:
    """A fake tracefs at ``<tmp>/tracing`` and what the kernel would do with writes to it."""

    def __init__(self, tmp_path, events=None):
        self.root = str(tmp_path / "tracing")
        self.events = list(EVENT_FIELDS) if events is None else list(events)
        os.makedirs(os.path.join(self.root, "instances"))
        populate_buffer(self.root, self.events)
        self.writes = []
        self.reject_filters = False
        self.boot_id_path = str(tmp_path / "boot_id")
        _write_file(self.boot_id_path, "boot-1\n")
        self.mounts_path = str(tmp_path / "mounts")
        self.set_mounted(True)
        self.commands = []
        self.mount_result = (0, "", "")
        self.hidden = None

    def unmount_behind_our_back(self):
        """Like a real umount: the tree disappears from the mount point, its instances live on unseen."""
        self.hidden = self.root + ".unmounted"
        os.rename(self.root, self.hidden)
        os.mkdir(self.root)
        self.set_mounted(False)

    # -- the kernel's side

    def set_mounted(self, mounted):
        line = "nodev %s tracefs rw,relatime 0 0\n" % self.root if mounted else ""
        _write_file(self.mounts_path, "proc /proc proc rw 0 0\n" + line)

    def reboot(self, boot_id="boot-2"):
        _write_file(self.boot_id_path, boot_id + "\n")

    def instance(self, name="sigsleuth"):
        return os.path.join(self.root, "instances", name)

    def read(self, *parts):
        return _read_file(os.path.join(*parts)).strip()

    def _write(self, path, value):
        if not os.path.realpath(path).startswith(os.path.realpath(self.root) + os.sep):
            raise AssertionError("write outside the fake tracefs: %s" % path)
        self.writes.append((os.path.relpath(path, self.root), value))
        name = os.path.basename(path)
        if not os.path.exists(path):
            raise sigsleuth_tracefs.SigsleuthError("cannot write %r to %s: No such file or directory" % (value, path))
        if name == "trace_clock":
            if value not in CLOCKS:
                raise sigsleuth_tracefs.SigsleuthError("cannot write %r to %s: Invalid argument" % (value, path))
            value = _clock_line(value)
        elif name == "filter":
            if self.reject_filters and value != "0":
                _write_file(path, value + "\n      ^\nparse_error: Field not found\n")
                raise sigsleuth_tracefs.SigsleuthError("cannot write %r to %s: Invalid argument" % (value, path))
            value = "none" if value == "0" else value
        elif name == "buffer_size_kb":
            value = str(int(value) + 3)  # whole sub-buffer pages, as the kernel rounds
        _write_file(path, value + "\n")

    def _make_instance_dir(self, path):
        os.mkdir(path)
        populate_buffer(path, self.events)

    def _remove_instance_dir(self, path):
        if os.path.dirname(path) != os.path.join(self.root, "instances"):
            raise AssertionError("rmdir outside the fake instances/: %s" % path)
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        shutil.rmtree(path)

    def _run_command(self, module, args, **kwargs):
        self.commands.append(list(args))
        rc, out, err = self.mount_result if args[0] == "mount" else (0, "", "")
        if rc == 0 and args[0] == "mount":
            if self.hidden:
                os.rmdir(self.root)
                os.rename(self.hidden, self.root)
                self.hidden = None
            self.set_mounted(True)
        elif rc == 0 and args[0] == "umount":
            self.set_mounted(False)
        return rc, out, err

    @contextlib.contextmanager
    def patched(self, *modules):
        """Patch tracefs I/O and point the given library modules' PATHS at the fake files."""
        kernel = self

        def run_command(module, args, **kwargs):
            return kernel._run_command(module, args, **kwargs)

        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.object(sigsleuth_tracefs, "_write", self._write))
            stack.enter_context(mock.patch.object(sigsleuth_tracefs, "make_instance_dir", self._make_instance_dir))
            stack.enter_context(mock.patch.object(sigsleuth_tracefs, "remove_instance_dir",
                                                  self._remove_instance_dir))
            stack.enter_context(mock.patch.object(basic.AnsibleModule, "run_command", run_command))
            for library_module in modules:
                paths = dict(library_module.PATHS, boot_id=self.boot_id_path)
                if "mounts" in paths:
                    paths.update(mounts=self.mounts_path, default_tracefs=self.root)
                stack.enter_context(mock.patch.dict(library_module.PATHS, paths))
            yield self


def make_fake_proc(root, processes):
    """A fake /proc holding ``processes``: dicts with pid, ppid, comm, start_ticks, exe, argv, uid (and
    optionally state, default S)."""
    for entry in processes:
        base = os.path.join(root, str(entry["pid"]))
        os.makedirs(os.path.join(base, "task", str(entry["pid"])))
        tail = [entry.get("state", "S"), str(entry["ppid"])] + ["0"] * 17 + [str(entry["start_ticks"])] + ["0"] * 5
        _write_file(os.path.join(base, "stat"), "%d (%s) %s\n" % (entry["pid"], entry["comm"], " ".join(tail)))
        _write_file(os.path.join(base, "cmdline"), "".join(arg + "\0" for arg in entry["argv"]))
        _write_file(os.path.join(base, "status"), "Name:\t%s\nUid:\t%d\t%d\t%d\t%d\n" % ((entry["comm"],) +
                                                                                       (entry["uid"],) * 4))
        os.symlink(entry["exe"], os.path.join(base, "exe"))
        cpu = entry.get("cpu_limit", "unlimited")
        _write_file(os.path.join(base, "limits"),
                    "Limit                     Soft Limit           Hard Limit           Units     \n"
                    "Max cpu time              %-20s %-20s seconds   \n"
                    "Max realtime timeout      unlimited            unlimited            us        \n" % (cpu, cpu))
    _write_file(os.path.join(root, "uptime"), "1.0 1.0\n")  # a non-pid entry, to be skipped


class ExitJson(Exception):
    pass


class FailJson(Exception):
    pass


def _exit_json(self, **kwargs):
    kwargs.setdefault("changed", False)
    raise ExitJson(kwargs)


def _fail_json(self, **kwargs):
    kwargs["failed"] = True
    raise FailJson(kwargs)


def run_module(library_module, args, check_mode=False, diff=True):
    """Run library_module.main() with args; returns (result dict, failed).

    Every key of the result must be one of Ansible's common return values or documented in the module's RETURN,
    with the documented type."""
    args = dict(args)
    args["_ansible_check_mode"] = check_mode
    args["_ansible_diff"] = diff
    with patch_module_args(args), \
            mock.patch.object(basic.AnsibleModule, "exit_json", _exit_json), \
            mock.patch.object(basic.AnsibleModule, "fail_json", _fail_json):
        try:
            library_module.main()
        except ExitJson as exc:
            result, failed = exc.args[0], False
        except FailJson as exc:
            result, failed = exc.args[0], True
        else:
            raise AssertionError("the module returned without exit_json or fail_json")
    undocumented = undocumented_returns(yaml.safe_load(library_module.RETURN), result)
    assert not undocumented, "%s returned what its RETURN does not document: %s" % (
        library_module.__name__, "; ".join(undocumented))
    return result, failed


# Ansible's common return values: no module documents them in RETURN.
COMMON_RETURNS = frozenset(["changed", "failed", "msg", "diff", "invocation", "warnings", "deprecations", "rc",
                            "stdout", "stderr", "stdout_lines", "stderr_lines", "skipped", "exception"])
RETURN_TYPES = {"str": str, "int": int, "bool": bool, "float": (int, float), "list": (list, tuple), "dict": dict}


def undocumented_returns(documented, result, prefix="", common=COMMON_RETURNS):
    """What in result (keys, and the types of their values) the RETURN entries ``documented`` do not cover."""
    problems = []
    for key, value in result.items():
        name = prefix + key
        if key in common and key not in documented:
            continue
        if key not in documented:
            problems.append("%s is not documented" % name)
            continue
        problems.extend(_type_problems(name, documented[key], value))
        if isinstance(value, dict) and documented[key].get("contains"):
            problems.extend(undocumented_returns(documented[key]["contains"], value, name + ".", frozenset()))
    return problems


def _is(value, type_name):
    """Whether value is of the RETURN type type_name (null always is; a bool is no int)."""
    expected = RETURN_TYPES.get(type_name)
    if value is None or expected is None:
        return True
    return isinstance(value, expected) and not (isinstance(value, bool) and type_name in ("int", "float"))


def _type_problems(name, entry, value):
    if not _is(value, entry.get("type")):
        return ["%s is %s, documented as %s" % (name, type(value).__name__, entry["type"])]
    if entry.get("type") == "list" and value and not all(_is(item, entry.get("elements")) for item in value):
        return ["%s has elements that are not %s" % (name, entry["elements"])]
    return []


def load_state(state_dir):
    with open(os.path.join(state_dir, "state.json")) as handle:
        return json.load(handle)
