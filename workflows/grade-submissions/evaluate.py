"""Runs the tests against $SUBMISSION and records how many passed.

A failing test is the submission's answer, not a fault of the step: the step
exits 0 and reports passed/failed counts as outputs.
"""
import importlib.util
import os
import sys
import unittest

spec = importlib.util.spec_from_file_location("submission", os.environ["SUBMISSION"])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["submission"] = module

suite = unittest.defaultTestLoader.discover("tests")
result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
failed = len(result.failures) + len(result.errors)
passed = result.testsRun - failed
expected = int(os.environ["EXPECTED_TESTS"])
if result.testsRun != expected:
    sys.exit(f"ran {result.testsRun} tests, expected {expected}")
with open(os.environ["CRUCIBLE_OUTPUT"], "a") as out:
    out.write(f"passed={passed}\nfailed={failed}\n")
