"""JSON for ``cpuguard advise``: an object with a ``vms`` list (README "cpuguard advise")."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cpuguard.advice.records import Advice
from cpuguard.planning.records import Problem
from cpuguard.records import Missing
from cpuguard.render.advice_text import TAKES_EFFECT, advised_cpu_xml


def _by_feature(items: Sequence[Missing]) -> dict[str, list[str]]:
    return {m.feature: [o.detail for o in m.origins] for m in items}


def advice_data(advice: Advice) -> dict[str, Any]:
    advised = advice.advised
    return {
        "vm": advice.vm,
        "host": advice.host,
        "standing": advice.standing.value,
        "current": {"mode": advice.mode, "model": advice.model},
        "needs": _by_feature(advice.needs),
        "workload_level": advice.workload_level,
        "not_given": _by_feature(advice.not_given),
        "live_now": list(advice.live_now),
        "cold_now": list(advice.cold_now),
        "workload_hosts": list(advice.workload_hosts),
        "shortfalls": {
            s.host: {"missing": _by_feature(s.missing), "problems": list(s.problems)} for s in advice.shortfalls
        },
        "advised": None
        if advised is None
        else {
            "model": advised.model,
            "require": list(advised.required_libvirt),
            "disable": list(advised.disabled_libvirt),
            "level": advised.level,
        },
        "advised_cpu_xml": advised_cpu_xml(advised) if advised is not None else None,
        "live_after": list(advice.live_after),
        "cold_after": list(advice.cold_after),
        "opened": list(advice.opened),
        "takes_effect": TAKES_EFFECT if advised is not None else None,
        "notes": list(advice.notes),
    }


def render_advice_json(advices: Sequence[Advice], problems: Sequence[Problem] = ()) -> str:
    data = {
        "vms": [advice_data(a) for a in advices],
        "problems": [{"kind": p.kind, "name": p.name, "message": p.message} for p in problems],
    }
    return json.dumps(data, indent=2) + "\n"
