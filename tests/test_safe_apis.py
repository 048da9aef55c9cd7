"""A lint over cpuguard/ for APIs that run code or parse unsafely (on top of ruff's S rules).

cpuguard runs as root in libvirt's hook and reads files written by people and copied
around. Forbidden in the package:

* ``shell=True`` in any call, and ``os.system`` / ``os.popen`` / ``subprocess.getoutput``:
  a shell turns data into commands;
* ``eval`` and ``exec``;
* ``yaml.load`` / ``load_all`` without a safe loader, and PyYAML's unsafe loaders
  (``Loader``, ``UnsafeLoader``, ``FullLoader``, ``unsafe_load``, ``full_load``);
* ``pickle``, ``marshal``, ``shelve`` (and friends): loading them runs code;
* XML parsing outside ``cpuguard/xmlsafe.py``: ElementTree's and defusedxml's parse
  functions, ``xml.dom``, ``xml.sax``, ``xml.parsers.expat``, ``lxml``;
* ``tempfile.mktemp`` (a name another user can take first);
* ``time.time()``: the wall clock jumps (NTP, an admin, a VM resumed). Deadlines and durations
  use ``time.monotonic()``, timestamps ``datetime.now(UTC)``.

Unlike ruff's per-line ``noqa``, an exception here is an entry in :data:`ALLOWED` with its
reason, and an entry no longer needed fails the test.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "cpuguard"

#: (file relative to the repository, rule) -> why this use is acceptable.
ALLOWED: dict[tuple[str, str], str] = {}

SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
UNSAFE_YAML_NAMES = {"Loader", "UnsafeLoader", "FullLoader", "CLoader", "CUnsafeLoader", "CFullLoader",
                     "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}  # fmt: skip
CODE_LOADING_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}
XML_MODULES = {"xml.etree.ElementTree", "xml.etree.cElementTree", "xml.etree", "defusedxml",
               "defusedxml.ElementTree", "defusedxml.cElementTree", "defusedxml.minidom", "defusedxml.sax",
               "defusedxml.expatbuilder", "defusedxml.pulldom", "defusedxml.lxml"}  # fmt: skip
XML_PARSE_FUNCTIONS = {"parse", "fromstring", "fromstringlist", "XML", "XMLID", "iterparse", "XMLParser",
                       "XMLPullParser", "parseString"}  # fmt: skip
XML_OTHER_PARSERS = ("xml.dom", "xml.sax", "xml.parsers", "lxml", "xmlrpc", "defusedxml.minidom",
                     "defusedxml.sax", "defusedxml.pulldom", "defusedxml.lxml", "defusedxml.expatbuilder")  # fmt: skip
XML_ESCAPING = "xml.sax.saxutils"  # escape() and quoteattr() write XML, they parse nothing
XML_HOME = "cpuguard/xmlsafe.py"


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    rule: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.text}"


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


class _Checker(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.found: list[Violation] = []
        self.aliases: dict[str, str] = {}  # local name -> module or module.attribute it stands for
        self.safe_loaders = set(SAFE_YAML_LOADERS)

    def flag(self, node: ast.AST, rule: str, text: str) -> None:
        self.found.append(Violation(self.path, getattr(node, "lineno", 0), rule, text))

    def full(self, node: ast.expr) -> str | None:
        """The dotted name with its first part replaced by what the import bound it to."""
        name = _dotted(node)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        base = self.aliases.get(head, head)
        return f"{base}.{rest}" if rest else base

    # -- imports ---------------------------------------------------------------

    def _module(self, node: ast.AST, module: str) -> None:
        top = module.split(".")[0]
        if top in CODE_LOADING_MODULES:
            self.flag(node, "pickle", f"import of {module}: loading it runs code")
        if self.path != XML_HOME and module.startswith(XML_OTHER_PARSERS) and not module.startswith(XML_ESCAPING):
            self.flag(node, "xml", f"import of {module}: parse XML only through cpuguard.xmlsafe")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._module(node, alias.name)
            self.aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(
                "."
            )[0]
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        self._module(node, module)
        for alias in node.names:
            qualified = f"{module}.{alias.name}"
            self._module(node, qualified)
            self.aliases[alias.asname or alias.name] = qualified
            if module == "yaml" and alias.name in UNSAFE_YAML_NAMES:
                self.flag(node, "yaml", f"import of yaml.{alias.name}: an unsafe loader")
            if self.path != XML_HOME and module in XML_MODULES and alias.name in XML_PARSE_FUNCTIONS:
                self.flag(node, "xml", f"import of {qualified}: parse XML only through cpuguard.xmlsafe")
        self.generic_visit(node)

    # -- definitions -----------------------------------------------------------

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            name = self.full(base) or ""
            if name.split(".")[-1] in self.safe_loaders and (name.startswith("yaml.") or "." not in name):
                self.safe_loaders.add(node.name)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        # _Base = yaml.SafeLoader, or getattr(yaml, "CSafeLoader", yaml.SafeLoader): a safe loader too
        value = node.value
        names: list[str] = []
        if isinstance(value, ast.Call) and _dotted(value.func) == "getattr" and len(value.args) == 3:
            first, second, third = value.args
            if isinstance(second, ast.Constant) and isinstance(second.value, str):
                names = [f"{self.full(first)}.{second.value}", self.full(third) or ""]
        else:
            names = [self.full(value) or ""]
        if names and all(n.startswith("yaml.") and n.split(".")[-1] in self.safe_loaders for n in names):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.safe_loaders.add(target.id)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit_Assign(ast.Assign(targets=[node.target], value=node.value, lineno=node.lineno))
        else:
            self.generic_visit(node)

    # -- uses ------------------------------------------------------------------

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = self.full(node)
        if name and name.startswith("yaml.") and name.removeprefix("yaml.") in UNSAFE_YAML_NAMES:
            self.flag(node, "yaml", f"{name}: an unsafe PyYAML loader")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = self.full(node.func) or ""
        for keyword in node.keywords:
            literal_false = isinstance(keyword.value, ast.Constant) and keyword.value.value is False
            if keyword.arg == "shell" and not literal_false:
                self.flag(node, "shell", "shell=True: a shell turns data into commands; pass an argument list")
        if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
            self.flag(node, "shell", f"{name} runs a shell; use subprocess.run with an argument list")
        if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
            self.flag(node, "eval", f"{name}(): runs text as code")
        if name in ("yaml.load", "yaml.load_all"):
            loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
            if loader is None and len(node.args) > 1:
                loader = node.args[1]
            loader_name = (self.full(loader) or "").split(".")[-1] if loader is not None else ""
            if loader_name not in self.safe_loaders:
                self.flag(node, "yaml", f"{name} without a safe Loader (got {loader_name or 'none'})")
        if name == "tempfile.mktemp":
            self.flag(node, "tempfile", "tempfile.mktemp: another user can create the name first")
        if name == "time.time":
            self.flag(node, "clock", "time.time() jumps with the clock: time.monotonic() or datetime.now(UTC)")
        module, _, function = name.rpartition(".")
        if self.path != XML_HOME and module in XML_MODULES and function in XML_PARSE_FUNCTIONS:
            self.flag(node, "xml", f"{name}(): parse XML only through cpuguard.xmlsafe")
        self.generic_visit(node)


def find_violations(source: str, path: str) -> list[Violation]:
    checker = _Checker(path)
    checker.visit(ast.parse(source, filename=path))
    return checker.found


# -- the rules catch what they should, and only that ------------------------------------------

FORBIDDEN = {
    "shell": [
        "import subprocess\nsubprocess.run('ls ' + d, shell=True)",
        "import subprocess as sp\nsp.Popen(cmd, shell=1)",
        "import os\nos.system('virsh list')",
        "from os import popen\npopen('id')",
        "import subprocess\nsubprocess.check_output(x, shell=flag)",
    ],
    "eval": ["eval(text)", "exec(code, {})", "import builtins\nbuiltins.eval('1')"],
    "yaml": [
        "import yaml\nyaml.load(text)",
        "import yaml\nyaml.load(text, Loader=yaml.Loader)",
        "import yaml\nyaml.load(text, yaml.FullLoader)",
        "import yaml\nyaml.unsafe_load(text)",
        "from yaml import Loader\n",
        "import yaml\nclass L(yaml.Loader): pass\nyaml.load(t, Loader=L)",
        "import yaml as y\ny.load_all(text)",
        "import yaml\nB = getattr(yaml, 'CLoader', yaml.Loader)\nclass L(B): pass\nyaml.load(t, Loader=L)",
    ],
    "pickle": ["import pickle", "from pickle import loads", "import marshal", "import shelve", "import dill"],
    "xml": [
        "import xml.etree.ElementTree as ET\nET.fromstring(data)",
        "from xml.etree import ElementTree\nElementTree.parse(path)",
        "from xml.etree.ElementTree import fromstring",
        "import defusedxml.ElementTree as D\nD.fromstring(data)",
        "import xml.dom.minidom",
        "from xml.sax import make_parser",
        "import lxml.etree",
        "import xml.etree.ElementTree as ET\nET.XMLParser()",
    ],
    "tempfile": ["import tempfile\ntempfile.mktemp()"],
    "clock": ["import time\ndeadline = time.time() + 5", "from time import time\nstarted = time()"],
}

ALLOWED_SNIPPETS = [
    "import subprocess\nsubprocess.run(['virsh', 'list'], check=True)",
    "import subprocess\nsubprocess.run(args, shell=False)",
    "import yaml\nyaml.safe_load(text)",
    "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    "import yaml\nyaml.load(text, Loader=yaml.CSafeLoader)",
    "import yaml\nclass Strict(yaml.SafeLoader): pass\nclass Stricter(Strict): pass\nyaml.load(t, Loader=Stricter)",
    "import yaml\nB = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)\nclass L(B): pass\nyaml.load(t, Loader=L)",
    "from xml.sax.saxutils import escape\nescape(text)",
    "import xml.etree.ElementTree as ET\ndef f(e: ET.Element) -> str: return e.tag",
    "import xml.etree.ElementTree as ET\nET.Element('cpu')\nET.tostring(e)",
    "import json\njson.loads(text)",
    "import tempfile\ntempfile.mkstemp()",
    "model.eval()",
    "import time\nstarted = time.monotonic()",
    "import importlib\nimportlib.import_module('cpuguard.hook.cli')",
]


@pytest.mark.parametrize(
    ("rule", "source"), [(rule, s) for rule, sources in FORBIDDEN.items() for s in sources]
)
def test_each_forbidden_use_is_caught(rule: str, source: str) -> None:
    rules = {v.rule for v in find_violations(source, "cpuguard/example.py")}
    assert rule in rules, f"not caught: {source!r}"


@pytest.mark.parametrize("source", ALLOWED_SNIPPETS)
def test_safe_uses_pass(source: str) -> None:
    assert find_violations(source, "cpuguard/example.py") == []


def test_xml_parsing_is_allowed_in_xmlsafe_only() -> None:
    source = "import defusedxml.ElementTree as DET\nDET.fromstring(text, forbid_dtd=True)"
    assert find_violations(source, XML_HOME) == []
    assert [v.rule for v in find_violations(source, "cpuguard/domain.py")] == ["xml"]


# -- the package ------------------------------------------------------------------------------


def _package_violations() -> list[Violation]:
    found: list[Violation] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        found.extend(find_violations(path.read_text(encoding="utf-8"), relative))
    return found


def test_cpuguard_uses_only_safe_apis() -> None:
    found = _package_violations()
    unexpected = [v for v in found if (v.path, v.rule) not in ALLOWED]
    assert not unexpected, "forbidden APIs (see tests/test_safe_apis.py):\n" + "\n".join(map(str, unexpected))


def test_every_allowance_is_still_needed() -> None:
    used = {(v.path, v.rule) for v in _package_violations()}
    # an entry for a file this build does not have (cpuguard's parts are optional) is not stale
    stale = sorted(entry for entry in set(ALLOWED) - used if (ROOT / entry[0]).exists())
    assert not stale, f"remove these entries from ALLOWED: {stale}"
