"""Fleet planning: evacuation plans, the VM x host matrix, cluster baselines, metrics.

Data flows one way here too: ``load`` / ``collect`` read the world into
plain records, ``plan``, ``matrix`` and ``baseline`` decide (pure, on top of
``requirements.build_requirements`` and ``verdict.decide``), and the
renderers in ``cpuguard.render`` print.
"""
