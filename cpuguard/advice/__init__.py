"""Advice: for each VM, the most portable guest CPU definition its workload allows.

``advise.py`` is pure: it takes a VM as the inventory knows it, the fleet's
host facts and cpuguard's knowledge and returns :class:`records.Advice`;
``cli.py`` loads the fleet and renders. Renderers live in ``cpuguard/render/``.
"""
