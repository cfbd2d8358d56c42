"""Bad input against the SafetyPolicy engine with the real filters (all five, failClosed): random
chat bodies (any roles, contents of any JSON shape, any Unicode including lone surrogates and
look-alikes) and random BYTES tensors (any bytes). Every answer is a completion or a named 4xx;
never a 5xx: a filter that raised on a ``str`` would show here as ``SafetyUnavailable``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cutover.serving.errors import ServingError
from cutover.serving.protocol import assemble, encode_tensors
from cutover.serving.safety.policy import Policy, compile_policy

from .test_pipeline import body, json_body
from .test_safety_pipeline import Setup, Texter, Upstream
from .test_safety_policy import EVERY_FILTER, document


@pytest.fixture(scope="module")
def policy() -> Policy:
    return compile_policy(document(**{**EVERY_FILTER, "advice": {"scope": "both"}, "bias": {"scope": "both"}}))


TEXT = st.text(max_size=300) | st.sampled_from(
    ["", " ", "k1ll mys3lf", "s u i c i d e", "\u0455uicide", "a@b.io 4111 1111 1111 1111", "\ud800 lone", "x" * 5000]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)
PART = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "other"]), "text": TEXT | JSON})
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": TEXT | st.lists(PART, max_size=3)}
)
BROKEN = st.fixed_dictionaries({"role": st.sampled_from(["user", "robot"]), "content": JSON})


def refused_as_a_client_error(error: ServingError) -> bool:
    return error.status < 500


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(MESSAGE, min_size=1, max_size=4) | st.lists(MESSAGE | BROKEN, max_size=4) | JSON, reply=TEXT)
async def test_random_chat_bodies_answer_or_fail_as_the_clients_mistake(
    tmp_path: Path, policy: Policy, messages: Any, reply: str
) -> None:
    setup = Setup(tmp_path, Upstream(reply=reply), apply=False)
    setup.guard.apply(policy)
    try:
        answer = await setup.pipeline.chat(json_body({"messages": messages}), "fuzz")
    except ServingError as error:
        event(f"refused: {type(error).__name__}")
        assert refused_as_a_client_error(error), f"{type(error).__name__} {error.status}: {error}"
    else:
        event("answered")
        json.dumps(answer)  # a body the server can send
    setup.audit.close()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    elements=st.lists(
        st.binary(max_size=200) | TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")), min_size=1, max_size=4
    )
)
async def test_random_bytes_tensors_answer_or_fail_as_the_clients_mistake(
    tmp_path: Path, policy: Policy, elements: list[bytes]
) -> None:
    setup = Setup(tmp_path, Texter(), apply=False)
    setup.guard.apply(policy)
    text = np.empty(len(elements), dtype=object)
    text[:] = elements
    tensors, buffers = encode_tensors({"text": text, "weight": np.ones(len(elements), np.float32)}, {"text": True})
    sent, length = assemble({"inputs": tensors}, buffers)
    try:
        await setup.pipeline.infer(body(sent), str(length), "fuzz")
        event("answered")
    except ServingError as error:
        event(f"refused: {type(error).__name__}")
        assert refused_as_a_client_error(error), f"{type(error).__name__} {error.status}: {error}"
    setup.audit.close()
