"""Message ids: random version-4 UUIDs in their canonical text form."""

from __future__ import annotations

import os
import uuid

from services.grader.grading.customer import message_id


def test_message_ids_are_canonical_random_uuids() -> None:
    ids = [message_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
    # Every variant digit comes up (8, 9, a, b): the two random bits there are used.
    assert {text[19] for text in ids} == set("89ab")


def test_a_forked_child_draws_ids_of_its_own() -> None:
    message_id()  # the parent has a pool under way
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, " ".join(message_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    assert len(child) == 3
    assert child.isdisjoint({message_id() for _ in range(3)})
