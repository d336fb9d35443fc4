"""Counts the test cases the submissions will be graded on."""
import os
import pathlib
import re

count = sum(len(re.findall(r"^\s*def test_", p.read_text(), re.M))
            for p in pathlib.Path("tests").glob("test_*.py"))
with open(os.environ["CRUCIBLE_OUTPUT"], "a") as out:
    out.write(f"tests={count}\n")
print(f"{count} tests")
