"""YAML policy documents, read without letting a small document cost a lot.

YAML aliases (`*name`, referring to an `&name` anchor) let a few hundred bytes stand for
billions of nodes ("billion laughs"): PyYAML builds every one of them, a 529-byte document
took 9 s of CPU, and the stored JSON would hold the expansion. A policy never needs them,
so the document is first read as a stream of parser events (no objects built), and
refused on the first anchor or alias, or when it holds more nodes or nests deeper than any
policy does. Only then is it loaded, with the C loader when PyYAML has it.
"""

from __future__ import annotations

import yaml

from shared.errors import PolicyInvalid

MAX_POLICY_BYTES = 256 * 1024
# The shipped default policy has ~300 nodes nested 8 deep.
MAX_NODES = 20_000
MAX_DEPTH = 64
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def refusal(message: str) -> PolicyInvalid:
    """A problem with the document as a whole (path `""`)."""
    return PolicyInvalid([("", message)])


def _check_events(text: str | bytes) -> None:
    """Refuse anchors, aliases, too many nodes and deep nesting, before building objects."""
    nodes = depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise refusal("YAML anchors and aliases (&name, *name, <<: *name) are not "
                          "accepted in a policy: write every part out in full")
        if isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
            nodes += 1
            if nodes > MAX_NODES:
                raise refusal(f"a policy document holds at most {MAX_NODES} values")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise refusal(f"a policy document nests at most {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load_policy_yaml(text: str | bytes) -> object:
    """The document as plain data; raises PolicyInvalid for what a policy may not hold
    (too large, anchors or aliases, too many nodes, too deep) and yaml.YAMLError when it
    is not YAML at all."""
    size = len(text.encode()) if isinstance(text, str) else len(text)
    if size > MAX_POLICY_BYTES:
        raise refusal(f"a policy document is at most {MAX_POLICY_BYTES} bytes")
    _check_events(text)
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader (CSafeLoader/SafeLoader)
