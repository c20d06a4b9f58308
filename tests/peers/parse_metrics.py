"""Parses a Prometheus text exposition (stdin) with the Prometheus project's own parser
(prometheus_client.parser) and prints the families as JSON on stdout:
[{"name", "type", "documentation", "samples": [{"name", "labels", "value"}]}].
Exits non-zero, with the parser's message, on anything it refuses."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def number(value):
    return None if math.isnan(value) or math.isinf(value) else value


def main():
    text = sys.stdin.read()
    families = []
    for family in text_string_to_metric_families(text):
        families.append({
            "name": family.name,
            "type": family.type,
            "documentation": family.documentation,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": number(s.value)}
                for s in family.samples
            ],
        })
    json.dump(families, sys.stdout)


if __name__ == "__main__":
    main()
