"""Test and benchmark tooling for mlref: the probe kit (:mod:`mlref_testing.probe`: fuzzing, faults, load).

Tests and benchmarks import it; ``common/`` and an app's production modules never do
(``tests/common/test_layers.py`` checks).
"""
