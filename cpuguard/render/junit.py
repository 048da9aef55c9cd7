"""JUnit XML for CI systems (GitLab, GitHub Actions, Jenkins display it natively).

One test case per VM: it fails when the VM has no safe target. Items that
could not be read are test cases with an ``<error>``, so an incomplete plan
never looks green. Format: the widely used Ant/Jenkins JUnit schema
(testsuites > testsuite > testcase with failure / error / system-out).
"""

from __future__ import annotations

from datetime import UTC
from xml.etree.ElementTree import Element, SubElement, indent, tostring

from cpuguard.planning.matrix import Matrix
from cpuguard.planning.records import Baseline, EvacuationPlan, Problem, ReportMeta
from cpuguard.records import Move
from cpuguard.render.plan_text import _rejection, baseline_xml, cause_lines, render_baseline_text

#: ReportMeta.items() -> testsuite property names (dotted, as CI tools show other tools' properties).
_PROPERTIES = {
    "Generated": "cpuguard.generated_at",
    "cpuguard version": "cpuguard.version",
    "Inventory": "cpuguard.inventory",
    "Hosts": "cpuguard.hosts",
    "VMs": "cpuguard.vms",
    "Host facts captured": "cpuguard.facts_captured",
}


def _suite(root: Element, name: str, meta: ReportMeta | None) -> Element:
    suite = SubElement(root, "testsuite", name=name)
    if meta is not None:
        # <properties> comes first in a testsuite; the Ant/Jenkins schema's timestamp has no time zone: UTC.
        suite.set("timestamp", meta.generated_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        properties = SubElement(suite, "properties")
        for what, value in meta.items():
            SubElement(properties, "property", name=_PROPERTIES[what], value=value)
    return suite


def _finish(root: Element) -> str:
    tests = failures = errors = 0
    for suite in root.iter("testsuite"):
        cases = suite.findall("testcase")
        suite_failures = sum(1 for c in cases if c.find("failure") is not None)
        suite_errors = sum(1 for c in cases if c.find("error") is not None)
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(suite_failures))
        suite.set("errors", str(suite_errors))
        tests, failures, errors = tests + len(cases), failures + suite_failures, errors + suite_errors
    root.set("tests", str(tests))
    root.set("failures", str(failures))
    root.set("errors", str(errors))
    indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root, encoding="unicode") + "\n"


def _problem_cases(suite: Element, classname: str, problems: tuple[Problem, ...]) -> None:
    for problem in problems:
        case = SubElement(suite, "testcase", classname=f"{classname}.unreadable", name=f"{problem.kind} {problem.name}")
        error = SubElement(case, "error", message=problem.message, type="incomplete")
        error.text = problem.describe()


def render_evacuation_junit(plan: EvacuationPlan, meta: ReportMeta | None = None) -> str:
    root = Element("testsuites", name="cpuguard plan evacuate")
    suite = _suite(root, f"evacuate {plan.host} ({plan.move.value})", meta)
    classname = f"cpuguard.evacuate.{plan.host}"
    _problem_cases(suite, classname, plan.problems)  # incomplete first
    for vm in sorted(plan.vms, key=lambda v: v.vm):
        case = SubElement(suite, "testcase", classname=classname, name=vm.vm)
        if vm.undecided:
            unread = ", ".join(vm.unread)
            message = f"no target read takes {vm.vm} ({vm.move.value} move); {unread} could not be read and might"
            error = SubElement(case, "error", message=message, type="incomplete")
            error.text = message
        elif vm.stranded:
            message = f"no safe target for {vm.vm} ({vm.move.value} move)"
            if vm.stranded_by == "configuration" and vm.advised is not None:
                # the fix, where a CI system shows only the message
                extras = [f"+{f}" for f in vm.advised.required_libvirt] + [f"-{f}" for f in vm.advised.disabled_libvirt]
                model = " ".join([vm.advised.model, *extras])
                message += (
                    f": stranded by configuration; a <cpu> of model {model} (cpuguard advise {vm.vm}) "
                    f"opens {', '.join(vm.advised_targets)} from its next cold boot"
                )
            elif vm.stranded_by == "workload":
                message += ": stranded by the workload"
            failure = SubElement(case, "failure", message=message, type="stranded")
            lines = [f"{vm.vm} has no safe target among {', '.join(plan.targets) or 'no hosts'}."]
            if vm.cold_only:
                lines.append(f"After a shutdown (cold move) it could start on: {', '.join(vm.cold_only)}.")
            elif vm.move is Move.LIVE:
                lines.append("After a shutdown (cold move) no target could start it either.")
            lines.extend(line.removeprefix("  ") for line in cause_lines(vm))
            for candidate in vm.candidates:
                lines.append(f"{candidate.host}:")
                lines.extend(_rejection(candidate.verdict(vm.move), "    "))
            failure.text = "\n".join(lines)
        else:
            out = SubElement(case, "system-out")
            out.text = f"safe targets ({vm.move.value}): {', '.join(vm.safe)}"
    return _finish(root)


def render_matrix_junit(matrix: Matrix, meta: ReportMeta | None = None) -> str:
    root = Element("testsuites", name="cpuguard plan matrix")
    suite = _suite(root, "VM x host matrix (live)", meta)
    for vm in matrix.vms:
        case = SubElement(suite, "testcase", classname=f"cpuguard.matrix.{vm.host or 'unplaced'}", name=vm.name)
        if vm.live_targets == 0:
            message = f"no other host can take {vm.name} live"
            cause = matrix.stranded_by.get(vm.name)
            if cause == "configuration":
                message += f": stranded by configuration; cpuguard advise {vm.name} gives the <cpu> that frees it"
            elif cause == "workload":
                message += ": stranded by the workload"
            failure = SubElement(case, "failure", message=message, type="stranded")
            cold = matrix.targets(vm, Move.COLD)
            failure.text = f"cold move possible to: {', '.join(cold)}" if cold else "no cold move target either"
        else:
            out = SubElement(case, "system-out")
            out.text = f"{vm.live_targets} live targets, {vm.cold_targets} cold targets"
    _problem_cases(suite, "cpuguard.matrix", matrix.problems)
    return _finish(root)


def render_baseline_junit(baseline: Baseline, meta: ReportMeta | None = None) -> str:
    root = Element("testsuites", name="cpuguard baseline")
    suite = _suite(root, f"baseline of {', '.join(baseline.hosts)}", meta)
    case = SubElement(suite, "testcase", classname="cpuguard.baseline", name="baseline")
    out = SubElement(case, "system-out")
    out.text = render_baseline_text(baseline) if baseline.model else baseline_xml(baseline)
    _problem_cases(suite, "cpuguard.baseline", baseline.problems)
    return _finish(root)
