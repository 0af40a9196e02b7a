#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
# Parses Prometheus text exposition on stdin with prometheus_client's own parser (Debian's
# python3-prometheus-client) and prints one line per sample: "<type> <name>{k="v",...} <value>".
# Exit 77 when prometheus_client is missing; a parse error is a traceback and exit 1.
import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.exit(77)

for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        print("%s %s{%s} %r" % (fam.type, s.name, labels, float(s.value)))
