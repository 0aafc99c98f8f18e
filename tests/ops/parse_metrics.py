"""Parses a Prometheus text exposition on stdin with the reference
parser (python3-prometheus-client) and prints it as JSON:
{family: {"type", "help", "samples": [[name, labels, value], ...]}}.
Exits non-zero when the parser rejects the text."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out[fam.name] = {
        "type": fam.type,
        "help": fam.documentation,
        "samples": [[s.name, s.labels, s.value] for s in fam.samples],
    }
json.dump(out, sys.stdout)
