"""Scores every evaluated submission from $CRUCIBLE_UPSTREAM."""
import json
import os

with open(os.environ["CRUCIBLE_UPSTREAM"]) as f:
    upstream = json.load(f)

lines = []
for step in upstream["steps"]:
    outputs = step.get("outputs", {})
    passed = int(outputs.get("passed", 0))
    total = passed + int(outputs.get("failed", 0))
    lines.append(f"{step['id']}: {step['state']} {passed}/{total}")
print("\n".join(lines))
with open(os.environ["CRUCIBLE_OUTPUT"], "a") as out:
    out.write(f"graded={len(lines)}\n")
