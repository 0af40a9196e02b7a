#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
# Reference chat-template renderer for tests/daemon/test_chat.c: Jinja2 (Debian's python3-jinja2),
# set up the way Hugging Face transformers' apply_chat_template sets it up (sandboxed environment,
# trim_blocks, lstrip_blocks, loopcontrols, tojson without HTML escaping, raise_exception,
# strftime_now). Reads JSON lines {"template", "messages", "add_generation_prompt", "bos_token",
# "kwargs"} on stdin, writes one JSON line {"text"} or {"error"} per case. Exit 77: no jinja2.
import json
import sys
from datetime import datetime

try:
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    sys.exit(77)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                    extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now
cache = {}
for line in sys.stdin:
    case = json.loads(line)
    src = case["template"]
    try:
        if src not in cache:
            cache[src] = env.from_string(src)
        text = cache[src].render(messages=case["messages"],
                                 add_generation_prompt=case["add_generation_prompt"],
                                 bos_token=case.get("bos_token", ""), eos_token="",
                                 **case.get("kwargs", {}))
    except Exception as e:  # noqa: BLE001 - any template failure is reported to the C side
        text = None
        err = repr(e)
    try:
        print(json.dumps({"text": text} if text is not None else {"error": err}))
        sys.stdout.flush()
    except BrokenPipeError:  # the C side stopped reading after too many failures
        sys.exit(0)
