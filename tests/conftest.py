"""Make the project's module_utils importable as ansible.module_utils.* and its modules importable by name."""

import os
import sys

import ansible.module_utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE_UTILS = os.path.join(ROOT, "module_utils")
if MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(MODULE_UTILS)
for path in (os.path.join(ROOT, "library"), ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)
